-- Kiosks paired with the fleet, each with the Ed25519 key that signs its requests, and how far
-- its journal has been received: the last row's id and hash, which the next batch continues.
CREATE TABLE kiosks (
    id TEXT PRIMARY KEY,
    terminal_id TEXT NOT NULL,
    region TEXT NOT NULL,
    public_key BYTEA NOT NULL UNIQUE,
    software_version TEXT NOT NULL,
    paired_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    revoked_at TIMESTAMPTZ,
    journal_head BIGINT NOT NULL DEFAULT 0,
    journal_head_hash TEXT NOT NULL,
    -- A broken chain holds ingest until an admin acts on its alert.
    ingest_held BOOLEAN NOT NULL DEFAULT false,
    last_heartbeat_at TIMESTAMPTZ,
    heartbeat JSONB
);

-- One-time pairing codes, valid for an hour.
CREATE TABLE pairing_codes (
    code TEXT PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    expires_at TIMESTAMPTZ NOT NULL,
    used_at TIMESTAMPTZ,
    kiosk_id TEXT REFERENCES kiosks(id)
);

-- Each kiosk's audit rows, stored once, exactly as the kiosk hashed them.
CREATE TABLE journal_rows (
    kiosk_id TEXT NOT NULL REFERENCES kiosks(id),
    id BIGINT NOT NULL,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    received_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (kiosk_id, id)
);
CREATE INDEX journal_rows_by_kind ON journal_rows (kiosk_id, kind);

-- Alerts: each opens once and closes once (at most one open per kiosk and kind).
CREATE TABLE alerts (
    id BIGSERIAL PRIMARY KEY,
    kiosk_id TEXT NOT NULL REFERENCES kiosks(id),
    kind TEXT NOT NULL,
    detail TEXT NOT NULL,
    opened_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    closed_at TIMESTAMPTZ,
    closed_by TEXT
);
CREATE UNIQUE INDEX alerts_open_once ON alerts (kiosk_id, kind) WHERE closed_at IS NULL;
