-- Plugin builds as their vendors shipped them: the component and its detached signature. The
-- fleet only carries them; each kiosk checks the signature against its own trust store.
CREATE TABLE plugin_builds (
    sha256 TEXT PRIMARY KEY,
    component BYTEA NOT NULL,
    signature TEXT NOT NULL,
    -- The file name it was uploaded as, for people.
    file_name TEXT NOT NULL,
    uploaded_by TEXT NOT NULL,
    uploaded_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Tags an admin gives kiosks, to choose them for a rollout.
ALTER TABLE kiosks ADD COLUMN tags TEXT[] NOT NULL DEFAULT '{}';

-- One build of one plugin (by the name kiosks' configs give it) going to a set of kiosks:
-- canaries first, the rest once every canary runs it; any kiosk's failure rolls it back.
CREATE TABLE rollouts (
    id BIGSERIAL PRIMARY KEY,
    plugin TEXT NOT NULL,
    sha256 TEXT NOT NULL REFERENCES plugin_builds(sha256),
    state TEXT NOT NULL CHECK (state IN ('canary', 'fleet', 'complete', 'paused', 'rolled-back')),
    -- While paused: the state it resumes in.
    paused_in TEXT,
    why TEXT NOT NULL DEFAULT '',
    created_by TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- At most one rollout of a plugin under way at a time.
CREATE UNIQUE INDEX rollouts_one_under_way ON rollouts (plugin)
    WHERE state IN ('canary', 'fleet', 'paused');

-- The kiosks a rollout goes to (chosen when it was made), and each one's last step.
CREATE TABLE rollout_kiosks (
    rollout_id BIGINT NOT NULL REFERENCES rollouts(id),
    kiosk_id TEXT NOT NULL REFERENCES kiosks(id),
    canary BOOLEAN NOT NULL,
    step TEXT,
    detail TEXT NOT NULL DEFAULT '',
    step_at TIMESTAMPTZ,
    PRIMARY KEY (rollout_id, kiosk_id)
);
CREATE INDEX rollout_kiosks_by_kiosk ON rollout_kiosks (kiosk_id, rollout_id);

-- Who did what to a rollout, and when.
CREATE TABLE rollout_events (
    id BIGSERIAL PRIMARY KEY,
    rollout_id BIGINT NOT NULL REFERENCES rollouts(id),
    what TEXT NOT NULL,
    by_whom TEXT NOT NULL,
    at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- Statements by the utility's root key endorsing vendor keys, as the root's holder wrote them;
-- every kiosk is sent them, and takes only those its own roots signed.
CREATE TABLE endorsements (
    id BIGSERIAL PRIMARY KEY,
    statement TEXT NOT NULL UNIQUE,
    added_by TEXT NOT NULL,
    added_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
