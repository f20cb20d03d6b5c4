-- Shared request-rate limiter state (GCRA) for several instances on one PostgreSQL.
-- One row per bucket ("key:42", "login-ip:10.0.0.1", ...): the theoretical arrival
-- time in micros and whether the last hit was allowed. A row whose tat_micros is in
-- the past means the same as no row, so expired rows may be deleted at any time.
CREATE TABLE IF NOT EXISTS rate_limit_buckets (
    bucket TEXT PRIMARY KEY,
    tat_micros BIGINT NOT NULL,
    allowed BIGINT NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS rate_limit_buckets_tat ON rate_limit_buckets (tat_micros);
-- Concurrent-stream slots shared by a cluster: one row per open stream, leased until
-- expires_micros and renewed while the stream runs, so the slots of an instance that
-- crashed free themselves when their lease runs out.
CREATE TABLE IF NOT EXISTS stream_slots (
    id TEXT PRIMARY KEY,
    user_id BIGINT NOT NULL,
    expires_micros BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS stream_slots_user ON stream_slots (user_id, expires_micros);
