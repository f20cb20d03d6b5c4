-- Community features: redemption codes (兑换码), announcements, audit-log indexes.
-- Redemption codes are stored in plain text (admins re-export a batch as CSV); they are
-- 16 random characters from a 31-symbol alphabet (~79 bits), single-use by a conditional
-- UPDATE on `used_by IS NULL`.

CREATE TABLE redemption_batches (
    id {{ID}},
    amount BIGINT,
    package_id BIGINT REFERENCES packages (id),
    count BIGINT NOT NULL,
    note TEXT,
    created_by BIGINT,
    created_at BIGINT NOT NULL
);

CREATE TABLE redemption_codes (
    id {{ID}},
    batch_id BIGINT NOT NULL REFERENCES redemption_batches (id),
    code TEXT NOT NULL,
    amount BIGINT,
    package_id BIGINT REFERENCES packages (id),
    used_by BIGINT REFERENCES users (id),
    used_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX redemption_codes_code ON redemption_codes (code);
CREATE INDEX redemption_codes_batch ON redemption_codes (batch_id, id);

CREATE TABLE announcements (
    id {{ID}},
    title TEXT NOT NULL,
    body TEXT NOT NULL,
    enabled BIGINT NOT NULL DEFAULT 1,
    starts_at BIGINT,
    ends_at BIGINT,
    created_by BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX announcements_enabled ON announcements (enabled, starts_at);

CREATE INDEX audit_logs_actor ON audit_logs (actor_id, created_at);
CREATE INDEX audit_logs_action ON audit_logs (action, created_at);
