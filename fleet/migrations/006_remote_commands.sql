-- Commands an operator or admin gave one kiosk, carried in its heartbeats' replies until it
-- reports each done (once: the kiosk's journal records it by its id).
CREATE TABLE kiosk_commands (
    id BIGSERIAL PRIMARY KEY,
    kiosk_id TEXT NOT NULL REFERENCES kiosks(id),
    command TEXT NOT NULL CHECK (command IN ('out-of-service', 'back-in-service', 'send-journal',
                                             'resend-reconciliation')),
    period BIGINT,
    issued_by TEXT NOT NULL,
    issued_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    done_at TIMESTAMPTZ,
    outcome TEXT
);
CREATE INDEX kiosk_commands_pending ON kiosk_commands (kiosk_id, id) WHERE done_at IS NULL;
