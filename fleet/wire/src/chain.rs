//! The journal's hash chain: each audit row's hash covers the previous row's hash and the row
//! itself, so an edited, removed or inserted row breaks every hash after it.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The `prev_hash` of a journal's first row.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// One audit row exactly as the kiosk's journal stores it (the body is the stored JSON text,
/// byte for byte: the hash covers it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRow {
    pub id: i64,
    /// UTC, ISO 8601 to the millisecond.
    pub at: String,
    pub kind: String,
    pub body: String,
    pub prev_hash: String,
    pub hash: String,
}

/// The hash of a row: SHA-256, hex, over its previous row's hash, id, time, kind and body, each
/// followed by a newline.
pub fn row_hash(prev: &str, id: i64, at: &str, kind: &str, body: &str) -> String {
    let mut h = Sha256::new();
    for part in [prev, &id.to_string(), at, kind, body] {
        h.update(part.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// Why a row does not continue a chain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainBreak {
    #[error("row {got} follows row {head}: rows {} to {} are missing", head + 1, got - 1)]
    Gap { head: i64, got: i64 },
    #[error("row {id} does not follow row {}: its previous hash is {prev}, row {} ends in {head_hash}", id - 1, id - 1)]
    Fork {
        id: i64,
        prev: String,
        head_hash: String,
    },
    #[error(
        "row {id} was changed after it was written: its hash is {stated}, its contents hash to {computed}"
    )]
    Edited {
        id: i64,
        stated: String,
        computed: String,
    },
}

/// Checks that `row` continues a chain whose last row is `head` with hash `head_hash` (0 and
/// [`GENESIS`] for an empty one).
pub fn check_next(head: i64, head_hash: &str, row: &AuditRow) -> Result<(), ChainBreak> {
    if row.id != head + 1 {
        return Err(ChainBreak::Gap { head, got: row.id });
    }
    if row.prev_hash != head_hash {
        return Err(ChainBreak::Fork {
            id: row.id,
            prev: row.prev_hash.clone(),
            head_hash: head_hash.to_string(),
        });
    }
    let computed = row_hash(&row.prev_hash, row.id, &row.at, &row.kind, &row.body);
    if computed != row.hash {
        return Err(ChainBreak::Edited {
            id: row.id,
            stated: row.hash.clone(),
            computed,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(prev: &str, id: i64, body: &str) -> AuditRow {
        let at = "2026-12-04T10:00:00.000Z";
        AuditRow {
            id,
            at: at.into(),
            kind: "sale-intent".into(),
            body: body.into(),
            prev_hash: prev.into(),
            hash: row_hash(prev, id, at, "sale-intent", body),
        }
    }

    #[test]
    fn a_chain_continues_only_with_its_next_unedited_row() {
        let first = row(GENESIS, 1, "{}");
        assert_eq!(check_next(0, GENESIS, &first), Ok(()));
        let second = row(&first.hash, 2, r#"{"fen":100}"#);
        assert_eq!(check_next(1, &first.hash, &second), Ok(()));
        assert!(matches!(
            check_next(0, GENESIS, &second),
            Err(ChainBreak::Gap { head: 0, got: 2 })
        ));
        let forked = row(GENESIS, 2, "{}");
        assert!(matches!(
            check_next(1, &first.hash, &forked),
            Err(ChainBreak::Fork { id: 2, .. })
        ));
        let mut edited = second.clone();
        edited.body = r#"{"fen":1}"#.into();
        let err = check_next(1, &first.hash, &edited).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("row 2 was changed after it was written"),
            "{err}"
        );
    }
}
