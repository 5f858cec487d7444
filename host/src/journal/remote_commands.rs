//! Remote commands in the journal: each done is one `remote-command` audit row naming its id,
//! who asked and what came of it, so a command the fleet sends again is not done twice, and
//! the last out-of-service or back-in-service command holds across restarts.

use rusqlite::OptionalExtension;

use super::{Journal, JournalError};

impl Journal {
    /// Which command `id` was and what came of it, if this kiosk has done it.
    pub fn remote_command_outcome(
        &self,
        id: i64,
    ) -> Result<Option<(String, String)>, JournalError> {
        self.db
            .query_row(
                "SELECT json_extract(body, '$.command'), json_extract(body, '$.outcome') FROM audit
                 WHERE kind = 'remote-command' AND json_extract(body, '$.id') = ?1 LIMIT 1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|cause| self.read_error(cause))
    }

    /// Who took the kiosk out of service from the fleet, if the last such command did.
    pub fn taken_out_of_service(&self) -> Result<Option<String>, JournalError> {
        // The operator's own `back-in-service` at the kiosk counts as much as the fleet's.
        let last: Option<(String, String)> = self
            .db
            .query_row(
                "SELECT coalesce(json_extract(body, '$.command'), kind), json_extract(body, '$.by')
                 FROM audit
                 WHERE (kind = 'remote-command'
                        AND json_extract(body, '$.command') IN ('out-of-service', 'back-in-service'))
                    OR kind = 'back-in-service'
                 ORDER BY id DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|cause| self.read_error(cause))?;
        Ok(last.and_then(|(command, by)| (command == "out-of-service").then_some(by)))
    }
}
