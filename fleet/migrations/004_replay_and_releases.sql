-- The time of the last signed request a kiosk made: each must be later than the one before,
-- so a captured request cannot be replayed.
ALTER TABLE kiosks ADD COLUMN last_request_ms BIGINT NOT NULL DEFAULT 0;
-- An admin accepted the break in the kiosk's chain: the first row after the received head is
-- stored as the kiosk sends it, once, and the chain goes on from it.
ALTER TABLE kiosks ADD COLUMN break_accepted BOOLEAN NOT NULL DEFAULT false;
-- A row stored across an accepted break says which break.
ALTER TABLE journal_rows ADD COLUMN accepted_break TEXT;

-- Who released a held ingest, when, and what the break was.
CREATE TABLE chain_releases (
    id BIGSERIAL PRIMARY KEY,
    kiosk_id TEXT NOT NULL REFERENCES kiosks(id),
    head BIGINT NOT NULL,
    detail TEXT NOT NULL,
    released_by TEXT NOT NULL,
    released_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- What the fleet page shows of each kiosk's last heartbeat, in columns of their own, so the
-- page reads no JSON for thousands of kiosks.
ALTER TABLE kiosks ADD COLUMN screen TEXT NOT NULL DEFAULT '';
ALTER TABLE kiosks ADD COLUMN screen_secs BIGINT NOT NULL DEFAULT 0;
ALTER TABLE kiosks ADD COLUMN money_in_fen BIGINT NOT NULL DEFAULT 0;
ALTER TABLE kiosks ADD COLUMN open_items BIGINT NOT NULL DEFAULT 0;
-- A kiosk's row is rewritten by every heartbeat: room on its page lets the new version stay
-- there without touching the indexes (a HOT update).
ALTER TABLE kiosks SET (fillfactor = 50);
