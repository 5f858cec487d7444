//! Vendor keys endorsed by the utility's root key. The root key is kept offline; its public
//! half is installed with each kiosk (`roots/*.pub` in the trust directory). A statement the
//! root signed (`*.endorsement`) adds one vendor key to the kiosk's trust store, so whoever
//! carries the statement (the fleet server) cannot make a kiosk trust a key the root did not.

use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer as _, Verifier, VerifyingKey};

use super::{KeyId, PublicKey, SecretKey, TrustError, key_line, malformed, parse_hex, read_text};

const ENDORSEMENT_TAG: &str = "selfvend-vendor-endorsement";
/// Domain separation: a root's endorsement can never be mistaken for a plugin signature.
const ENDORSED_CONTEXT: &[u8] = b"selfvend-vendor-endorsement-v1\0";

/// The root-signed statement "trust this vendor key, under this name".
#[derive(Debug, Clone)]
pub struct Endorsement {
    vendor: PublicKey,
    root_id: KeyId,
    signature: Signature,
}

fn endorsed_message(vendor: &VerifyingKey, name: &str) -> Vec<u8> {
    let mut message = ENDORSED_CONTEXT.to_vec();
    message.extend_from_slice(vendor.as_bytes());
    message.extend_from_slice(name.as_bytes());
    message
}

impl Endorsement {
    /// `root`'s endorsement of `vendor`, as the text of an `.endorsement` file.
    pub fn write(root: &SecretKey, vendor: &PublicKey) -> String {
        let signature = root.key.sign(&endorsed_message(&vendor.key, &vendor.name));
        format!(
            "# {} endorses {} (key {}) for this utility's kiosks\n\
             {ENDORSEMENT_TAG} {} {} {} {}\n",
            root.name,
            vendor.name,
            vendor.id(),
            hex::encode(vendor.key.as_bytes()),
            root.public_id(),
            hex::encode(signature.to_bytes()),
            vendor.name
        )
    }

    /// Reads a statement: `selfvend-vendor-endorsement <vendor key> <root key id> <signature>
    /// <vendor name>`.
    pub fn read(path: &Path) -> Result<Endorsement, TrustError> {
        let text = read_text(path)?;
        let line = key_line(&text, ENDORSEMENT_TAG, path)?;
        let mut parts = line.splitn(5, ' ');
        let _tag = parts.next();
        let key = parse_hex::<32>(parts.next().unwrap_or(""), path, "vendor key")?;
        let key = VerifyingKey::from_bytes(&key)
            .map_err(|e| malformed(path, format!("the vendor key is not an Ed25519 key: {e}")))?;
        let root_id = KeyId(parse_hex::<8>(
            parts.next().unwrap_or(""),
            path,
            "root key id",
        )?);
        let signature = Signature::from_bytes(&parse_hex::<64>(
            parts.next().unwrap_or(""),
            path,
            "signature",
        )?);
        let name = parts.next().unwrap_or("").trim().to_string();
        Ok(Endorsement {
            vendor: PublicKey { key, name },
            root_id,
            signature,
        })
    }

    /// The vendor key, if one of `roots` signed this statement.
    pub fn verify(&self, path: &Path, roots: &[PublicKey]) -> Result<PublicKey, TrustError> {
        let Some(root) = roots.iter().find(|r| r.id() == self.root_id) else {
            return Err(malformed(
                path,
                format!(
                    "endorsed by key {}, which is not one of this kiosk's root keys",
                    self.root_id
                ),
            ));
        };
        root.key
            .verify(
                &endorsed_message(&self.vendor.key, &self.vendor.name),
                &self.signature,
            )
            .map_err(|_| {
                malformed(
                    path,
                    format!(
                        "the root key {}'s signature does not match the statement (changed after \
                         it was signed)",
                        self.root_id
                    ),
                )
            })?;
        Ok(PublicKey {
            key: self.vendor.key,
            name: format!("{} (endorsed by {})", self.vendor.name, root.name),
        })
    }
}

/// Where `root` endorsing the vendor key at `vendor` writes its statement by default: beside
/// the vendor's key, `NAME.endorsement`.
pub fn default_path(vendor: &Path) -> PathBuf {
    let stem = vendor
        .file_name()
        .and_then(|n| n.to_str())
        .map(|n| n.trim_end_matches(".pub").trim_end_matches(".key"))
        .unwrap_or("vendor");
    vendor.with_file_name(format!("{stem}.endorsement"))
}
