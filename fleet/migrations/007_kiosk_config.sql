-- The fleet's part of kiosks' configs. Each `config set` is a new version, of the fleet-wide
-- defaults (kiosk_id NULL) or of one kiosk's overrides; nothing is edited in place.
CREATE TABLE config_versions (
    version BIGSERIAL PRIMARY KEY,
    kiosk_id TEXT REFERENCES kiosks(id),
    toml TEXT NOT NULL,
    set_by TEXT NOT NULL,
    set_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX config_versions_scope ON config_versions (kiosk_id, version DESC);

-- What a kiosk with overrides is sent: the newest defaults under its newest overrides, laid
-- over each other when either is set. Its version is the greater of the two, so it grows with
-- either. A kiosk without a row here is sent the newest defaults.
CREATE TABLE kiosk_configs (
    kiosk_id TEXT PRIMARY KEY REFERENCES kiosks(id),
    version BIGINT NOT NULL,
    toml TEXT NOT NULL
);
