//! A reply's header (transaction code, response code, message) and the response code table.

use crate::exports::selfvend::backend::dialect::BackendError;
use crate::selfvend::backend::types::{Refusal, RefusalCode};
use crate::wire::{Reader, Result};

/// A reply to the request's transaction, its fields not yet read.
pub struct Reply {
    tx: &'static str,
    code: String,
    message: String,
    body: Vec<u8>,
    fields_at: usize,
}

impl Reply {
    /// Reads the header of a reply body to transaction `tx`.
    pub fn parse(tx: &'static str, body: Vec<u8>) -> Result<Self> {
        let mut header = Reader::new(&body, 0, tx);
        let echoed = header.digits(4, "transaction code")?;
        if echoed != tx {
            return Err(header.malformed(format_args!(
                "transaction code {echoed} is not the request's"
            )));
        }
        let code = header.digits(2, "response code")?.to_owned();
        let message = header.a(40, "message")?;
        let fields_at = header.position();
        Ok(Reply {
            tx,
            code,
            message,
            body,
            fields_at,
        })
    }

    pub fn code(&self) -> &str {
        &self.code
    }

    /// A reader at the transaction's fields.
    pub fn fields(&self) -> Reader<'_> {
        Reader::new(&self.body, self.fields_at, self.tx)
    }

    /// Maps the response code: `None` for `00`, the refusal for `01`–`06` and `08`, and an
    /// error for the rest. `07` (2002 and 5003 only) is the caller's to handle first.
    pub fn refusal(&self) -> Result<Option<Refusal>> {
        let code = match self.code.as_str() {
            "00" => return Ok(None),
            "01" => RefusalCode::UnknownCard,
            "02" => RefusalCode::AccountClosed,
            "03" => RefusalCode::Arrears,
            "04" => RefusalCode::CreditNotTaken,
            "05" => RefusalCode::OverLimit,
            "06" => RefusalCode::CardMismatch,
            "08" => RefusalCode::Other,
            "09" => return Err(BackendError::NotSupported),
            "90" => return Err(self.did_nothing("request format error")),
            "96" => return Err(self.did_nothing("system error")),
            "07" => {
                return Err(
                    self.malformed("response code 07 (not found) is for 2002 and 5003 only")
                );
            }
            other => {
                return Err(self.malformed(&format!("response code {other} is not in the table")));
            }
        };
        Ok(Some(Refusal {
            code,
            message: self.message.clone(),
        }))
    }

    /// The fields of a `00` reply; any other code is the call's error.
    pub fn success(&self) -> Result<Reader<'_>> {
        match self.refusal()? {
            None => Ok(self.fields()),
            Some(refusal) => Err(BackendError::Refused(refusal)),
        }
    }

    fn malformed(&self, what: &str) -> BackendError {
        BackendError::MalformedReply(format!("{} reply: {what}", self.tx))
    }

    /// Codes 90 and 96: the backend did nothing, so the call is as if it never arrived.
    fn did_nothing(&self, what: &str) -> BackendError {
        BackendError::Unreachable(format!(
            "{} reply: response code {} ({what}; nothing was done): {}",
            self.tx, self.code, self.message
        ))
    }
}
