-- A whole number a kiosk wrote in a JSON body, or 0 if it is not one a bigint holds: a report
-- reads kiosks' bodies and must not fail on one kiosk's odd value.
CREATE FUNCTION whole_number(body jsonb, field text) RETURNS bigint
    LANGUAGE sql IMMUTABLE
    RETURN CASE WHEN body->>field ~ '^[0-9]{1,15}$' THEN (body->>field)::bigint ELSE 0 END;

-- The time of the last signed request a kiosk made: each must be later than the one before,
-- so a captured request cannot be replayed.
ALTER TABLE kiosks ADD COLUMN last_request_ms BIGINT NOT NULL DEFAULT 0;
-- The row whose break holds the kiosk's ingest (its id and the hash it stated), and, once an
-- admin released exactly that break, the same row to let in as the kiosk sends it, once.
ALTER TABLE kiosks ADD COLUMN hold_row BIGINT;
ALTER TABLE kiosks ADD COLUMN hold_hash TEXT;
ALTER TABLE kiosks ADD COLUMN accept_row BIGINT;
ALTER TABLE kiosks ADD COLUMN accept_hash TEXT;
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
UPDATE kiosks SET screen = coalesce(heartbeat->>'screen', ''),
                  screen_secs = whole_number(heartbeat, 'screen_secs'),
                  money_in_fen = whole_number(heartbeat, 'money_in_fen'),
                  open_items = whole_number(heartbeat, 'open_items')
WHERE heartbeat IS NOT NULL;

-- The banknotes of a kiosk's last week, found without reading all its rows.
CREATE INDEX journal_rows_by_kind_at ON journal_rows (kiosk_id, kind, at);
DROP INDEX journal_rows_by_kind;
-- A kiosk's row is rewritten by every heartbeat: room on its page lets the new version stay
-- there without touching the indexes (a HOT update).
ALTER TABLE kiosks SET (fillfactor = 50);
