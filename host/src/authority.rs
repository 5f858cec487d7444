//! The card authority a codec writes with: the card's own backend, through its dialect, so a
//! PSC or a MAC never comes from anywhere but the utility that issued the card.

use crate::backend::{BackendError, CardRef};
use crate::card::{AuthRequest, AuthorityError, CardAuthority};
use crate::plugin::{BackendSession, DialectError};

pub struct BackendAuthority {
    session: BackendSession,
    card: CardRef,
}

impl BackendAuthority {
    /// The authority for writing `card`, relayed through `session`.
    pub fn new(session: BackendSession, card: CardRef) -> Self {
        Self { session, card }
    }
}

impl CardAuthority for BackendAuthority {
    fn card_password(&mut self) -> Result<Vec<u8>, AuthorityError> {
        self.session
            .card_password(&self.card)
            .map_err(authority_error)
    }

    fn authenticate(&mut self, request: AuthRequest) -> Result<Vec<u8>, AuthorityError> {
        self.session
            .authenticate(&self.card.card_serial, &request)
            .map_err(authority_error)
    }
}

fn authority_error(e: DialectError) -> AuthorityError {
    match e {
        DialectError::Backend(BackendError::Refused(r)) => AuthorityError::Refused(r.message),
        other => AuthorityError::Unavailable(other.to_string()),
    }
}
