//! The journal's schema: each migration, in order, from an empty file to this kiosk's version.
//! A journal is migrated at open; one newer than this kiosk is refused.

/// The schema this kiosk writes. Older journals are migrated at open; newer ones are refused.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Each migration takes the schema from its index to its index + 1.
pub(super) const MIGRATIONS: [&str; 8] = [
    r#"
CREATE TABLE audit (
    id INTEGER PRIMARY KEY,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    body TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
-- Kiosk serials for backend sales: allocated here, one row per serial, never reused.
CREATE TABLE serials (
    serial INTEGER PRIMARY KEY AUTOINCREMENT,
    audit_id INTEGER NOT NULL REFERENCES audit(id)
);
CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL CHECK (value >= 0)
);
CREATE TRIGGER lifetime_counters_never_decrease
BEFORE UPDATE OF value ON counters
WHEN NEW.name LIKE 'lifetime.%' AND NEW.value < OLD.value
BEGIN
    SELECT RAISE(ABORT, 'a lifetime counter may not decrease');
END;
"#,
    r#"
-- Clearing periods (清机): exactly one is open or clearing at a time.
CREATE TABLE periods (
    id INTEGER PRIMARY KEY,
    opened_at TEXT NOT NULL,
    closed_at TEXT,
    state TEXT NOT NULL CHECK (state IN ('open', 'clearing', 'closed')),
    -- What the operator counted in the cash box, when they entered it.
    counted_fen INTEGER,
    report TEXT
);
INSERT INTO periods (id, opened_at, state)
    VALUES (1, strftime('%Y-%m-%dT%H:%M:%fZ', 'now'), 'open');
-- Each backend sale and where it stands; changed only with the audit row that says why.
CREATE TABLE sales (
    serial INTEGER PRIMARY KEY REFERENCES serials(serial),
    period_id INTEGER NOT NULL REFERENCES periods(id),
    payment TEXT NOT NULL CHECK (payment IN ('cash', 'bank-card')),
    card_serial TEXT NOT NULL,
    utility TEXT NOT NULL,
    paid_fen INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN
        ('intent', 'pending', 'granted', 'written', 'refused', 'never-reached', 'refunded',
         'manual')),
    grant_json TEXT,
    -- The backend request exactly as first sent, so a re-sell (补售电) repeats it unchanged.
    request_json TEXT NOT NULL,
    -- Automatic re-sell of a sale that never reached the backend: tries so far, next try.
    resell_attempts INTEGER NOT NULL DEFAULT 0,
    next_resell_at TEXT,
    -- Whether the backend has acknowledged the write confirmation of this sale.
    confirmed INTEGER NOT NULL DEFAULT 0,
    audit_id INTEGER NOT NULL REFERENCES audit(id)
);
CREATE INDEX sales_by_state ON sales (state, card_serial);
-- Banknotes the acceptor took, in the period they were taken.
CREATE TABLE banknotes (
    id INTEGER PRIMARY KEY,
    period_id INTEGER NOT NULL REFERENCES periods(id),
    fen INTEGER NOT NULL CHECK (fen > 0),
    audit_id INTEGER NOT NULL REFERENCES audit(id)
);
-- Clearing totals a period by payment, utility and state from these alone (covering indexes:
-- a report over a million sales reads no table rows).
CREATE INDEX sales_by_period_utility ON sales (period_id, payment, utility, state, paid_fen);
CREATE INDEX banknotes_fen_by_period ON banknotes (period_id, fen);
-- A customer's payment for one session: opened before the acceptor is enabled, closed when
-- its sale is allocated a serial. One left open after a stop is money taken with no sale.
CREATE TABLE payments (
    id INTEGER PRIMARY KEY,
    period_id INTEGER NOT NULL REFERENCES periods(id),
    card_serial TEXT NOT NULL,
    paid_fen INTEGER NOT NULL DEFAULT 0,
    state TEXT NOT NULL CHECK (state IN ('open', 'sold', 'abandoned', 'refunded')),
    serial INTEGER REFERENCES sales(serial),
    audit_id INTEGER NOT NULL REFERENCES audit(id)
);
-- What the kiosk could not finish on its own, for an operator.
CREATE TABLE manual_items (
    id INTEGER PRIMARY KEY,
    serial INTEGER REFERENCES sales(serial),
    payment_id INTEGER REFERENCES payments(id),
    card_serial TEXT,
    reason TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('open', 'resolved')),
    resolution TEXT,
    audit_id INTEGER NOT NULL REFERENCES audit(id)
);
"#,
    r#"
-- Each backend's reconciliation of a closed period: queued when the period closes, sent until
-- the backend answers (whether its totals match or differ).
CREATE TABLE reconciliations (
    period_id INTEGER NOT NULL REFERENCES periods(id),
    backend TEXT NOT NULL,
    -- The period report as sent, JSON.
    request_json TEXT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'matched', 'differs')),
    answer_json TEXT,
    audit_id INTEGER NOT NULL REFERENCES audit(id),
    PRIMARY KEY (period_id, backend)
);
-- A banknote the acceptor may hold without having credited it (caught in a jam, or stacked by
-- a reset after a power cut): its value, for an operator to check against the cash box.
ALTER TABLE manual_items ADD COLUMN caught_fen INTEGER;
-- Bank-card debits: each journaled before its purchase message goes to the acquirer. One the
-- acquirer approved is recorded in the same commit as its sale's intent; one whose answer is
-- not known is reversed, and the reversal is sent until the acquirer acknowledges it.
CREATE TABLE debits (
    id INTEGER PRIMARY KEY,
    period_id INTEGER NOT NULL REFERENCES periods(id),
    batch INTEGER NOT NULL,
    stan INTEGER NOT NULL,
    amount_fen INTEGER NOT NULL CHECK (amount_fen > 0),
    pan_masked TEXT NOT NULL,
    -- The card as a reversal must repeat it; wiped once the debit can no longer be reversed.
    card_json TEXT,
    state TEXT NOT NULL CHECK (state IN
        ('intent', 'approved', 'declined', 'failed', 'reversing', 'reversed')),
    serial INTEGER REFERENCES sales(serial),
    rrn TEXT,
    reversal_attempts INTEGER NOT NULL DEFAULT 0,
    audit_id INTEGER NOT NULL REFERENCES audit(id),
    UNIQUE (batch, stan)
);
CREATE INDEX debits_by_state ON debits (state);
"#,
    r#"
-- A banknote the engine decided to stack and the acceptor has not yet credited or given back:
-- its value, on its session's payment. One found at start may be in the cash box uncredited.
ALTER TABLE payments ADD COLUMN escrow_fen INTEGER;
-- Re-writes of a granted sale onto its card that the card refused, bounded before an operator.
ALTER TABLE sales ADD COLUMN rewrite_attempts INTEGER NOT NULL DEFAULT 0;
-- A written sale whose last acknowledged confirmation said "not written" must be confirmed
-- again as written (journals before v4 kept it as confirmed).
UPDATE sales SET confirmed = 0 WHERE state = 'written' AND confirmed = 1 AND serial IN (
    SELECT json_extract(body, '$.serial') FROM audit
    WHERE kind = 'write-confirm-intent' AND json_extract(body, '$.written') = 0);
-- Debits gain the two ends an operator gives a reversal the acquirer never acknowledged, once
-- they have asked the acquirer: `reversal-ended` (no debit stands) and `kept` (the debit stands
-- and the customer was paid back by the operator; settlement counts it).
CREATE TABLE debits_v4 (
    id INTEGER PRIMARY KEY,
    period_id INTEGER NOT NULL REFERENCES periods(id),
    batch INTEGER NOT NULL,
    stan INTEGER NOT NULL,
    amount_fen INTEGER NOT NULL CHECK (amount_fen > 0),
    pan_masked TEXT NOT NULL,
    card_json TEXT,
    state TEXT NOT NULL CHECK (state IN
        ('intent', 'approved', 'declined', 'failed', 'reversing', 'reversed', 'reversal-ended',
         'kept')),
    serial INTEGER REFERENCES sales(serial),
    rrn TEXT,
    reversal_attempts INTEGER NOT NULL DEFAULT 0,
    audit_id INTEGER NOT NULL REFERENCES audit(id),
    -- How often the acquirer answered this debit's reversal and refused it.
    reversal_refusals INTEGER NOT NULL DEFAULT 0,
    UNIQUE (batch, stan)
);
INSERT INTO debits_v4 SELECT *, 0 FROM debits;
DROP TABLE debits;
ALTER TABLE debits_v4 RENAME TO debits;
CREATE INDEX debits_by_state ON debits (state);
-- The debit a reversal item is about.
ALTER TABLE manual_items ADD COLUMN debit_id INTEGER REFERENCES debits(id);
"#,
    r#"
-- What one card bought, for the kiosk's own per-card limits (a backend without can-buy).
CREATE INDEX sales_by_card ON sales (card_serial);
-- An item whose banknote may still sit in the acceptor (left in escrow by a stop, or handed to
-- an operator mid-flight): the note's arrival or return is matched to it by any later kiosk
-- process, never to a second item.
ALTER TABLE manual_items ADD COLUMN awaiting_note INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
-- Bill payments (缴费), each under a kiosk serial of its own and changed only with the audit row
-- that says why: a sale's states without the card (`paid` is final; `refused` and
-- `never-reached` are money owed back, `manual` an operator's).
CREATE TABLE bill_payments (
    serial INTEGER PRIMARY KEY REFERENCES serials(serial),
    period_id INTEGER NOT NULL REFERENCES periods(id),
    payment TEXT NOT NULL CHECK (payment IN ('cash', 'bank-card')),
    customer_number TEXT NOT NULL,
    utility TEXT NOT NULL,
    paid_fen INTEGER NOT NULL CHECK (paid_fen > 0),
    state TEXT NOT NULL CHECK (state IN
        ('intent', 'pending', 'paid', 'refused', 'never-reached', 'refunded', 'manual')),
    receipt_json TEXT,
    -- The backend request exactly as first sent, so a re-pay (补缴) repeats it unchanged.
    request_json TEXT NOT NULL,
    repay_attempts INTEGER NOT NULL DEFAULT 0,
    next_repay_at TEXT,
    audit_id INTEGER NOT NULL REFERENCES audit(id)
);
CREATE INDEX bill_payments_by_state ON bill_payments (state);
CREATE INDEX bill_payments_by_period
    ON bill_payments (period_id, payment, utility, state, paid_fen);
-- The bill payment a session's banknotes paid, and the one an operator item is about.
ALTER TABLE payments ADD COLUMN bill_serial INTEGER REFERENCES bill_payments(serial);
ALTER TABLE manual_items ADD COLUMN bill_serial INTEGER REFERENCES bill_payments(serial);
"#,
    r#"
-- The bill payment an approved debit paid for (a sale's is in `serial`).
ALTER TABLE debits ADD COLUMN bill_serial INTEGER REFERENCES bill_payments(serial);
-- Whether a session's banknotes were for a bill payment (its payer is an account number).
ALTER TABLE payments ADD COLUMN for_bill INTEGER NOT NULL DEFAULT 0;
"#,
    r#"
-- Remote commands are looked up by kind (each done once, by its id).
CREATE INDEX audit_by_kind ON audit (kind, id);
"#,
];
