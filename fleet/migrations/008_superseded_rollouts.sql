-- A rollout past its canaries that a newer rollout of the same plugin took over: kiosks that
-- had not yet taken it are sent the newer one (a kiosk that never reports no longer holds
-- every later release of its plugin). It can still be rolled back.
ALTER TABLE rollouts DROP CONSTRAINT rollouts_state_check;
ALTER TABLE rollouts ADD CONSTRAINT rollouts_state_check
    CHECK (state IN ('canary', 'fleet', 'complete', 'paused', 'rolled-back', 'superseded'));
