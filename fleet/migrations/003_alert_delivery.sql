-- Each alert is delivered to the webhook twice at most: when it opens and when it closes,
-- retried with backoff until the webhook takes it.
ALTER TABLE alerts ADD COLUMN opened_sent_at TIMESTAMPTZ;
ALTER TABLE alerts ADD COLUMN closed_sent_at TIMESTAMPTZ;
ALTER TABLE alerts ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
ALTER TABLE alerts ADD COLUMN next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT now();
ALTER TABLE alerts ADD COLUMN last_error TEXT;
CREATE INDEX alerts_to_deliver ON alerts (next_attempt_at)
    WHERE opened_sent_at IS NULL OR (closed_at IS NOT NULL AND closed_sent_at IS NULL);
