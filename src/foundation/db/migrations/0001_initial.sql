-- The whole data model. Shared by SQLite and PostgreSQL: `{{ID}}` becomes the
-- backend's auto-increment primary key, everything else is portable SQL.
-- Conventions: money is BIGINT micro-units (1.00 = 1000000); instants are BIGINT
-- micro-seconds since the Unix epoch (UTC); business dates are 'YYYY-MM-DD' text.
-- Flags are BIGINT 0/1: the Any driver cannot decode SQLite booleans.

CREATE TABLE users (
    id {{ID}},
    email TEXT NOT NULL,
    password_hash TEXT,
    display_name TEXT,
    role TEXT NOT NULL DEFAULT 'user',
    status TEXT NOT NULL DEFAULT 'active',
    balance BIGINT NOT NULL DEFAULT 0,
    held BIGINT NOT NULL DEFAULT 0,
    daily_cap BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX users_email ON users (email);
CREATE INDEX users_role ON users (role);

CREATE TABLE sessions (
    id {{ID}},
    user_id BIGINT NOT NULL REFERENCES users (id),
    token_hash TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    last_seen_at BIGINT NOT NULL,
    revoked_at BIGINT,
    user_agent TEXT,
    ip TEXT
);
CREATE UNIQUE INDEX sessions_token_hash ON sessions (token_hash);
CREATE INDEX sessions_user ON sessions (user_id);

CREATE TABLE api_keys (
    id {{ID}},
    user_id BIGINT NOT NULL REFERENCES users (id),
    name TEXT NOT NULL,
    key_hash TEXT NOT NULL,
    prefix TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'active',
    spend_limit BIGINT,
    spent BIGINT NOT NULL DEFAULT 0,
    expires_at BIGINT,
    last_used_at BIGINT,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE UNIQUE INDEX api_keys_key_hash ON api_keys (key_hash);
CREATE INDEX api_keys_user ON api_keys (user_id);

CREATE TABLE upstreams (
    id {{ID}},
    name TEXT NOT NULL,
    base_url TEXT NOT NULL,
    api_key TEXT NOT NULL,
    models TEXT,
    model_map TEXT,
    priority BIGINT NOT NULL DEFAULT 0,
    weight BIGINT NOT NULL DEFAULT 1,
    enabled BIGINT NOT NULL DEFAULT 1,
    healthy BIGINT NOT NULL DEFAULT 1,
    consecutive_failures BIGINT NOT NULL DEFAULT 0,
    last_error TEXT,
    last_checked_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX upstreams_name ON upstreams (name);

CREATE TABLE model_prices (
    model TEXT NOT NULL PRIMARY KEY,
    input BIGINT NOT NULL,
    cached_input BIGINT NOT NULL,
    output BIGINT NOT NULL,
    cache_write BIGINT,
    enabled BIGINT NOT NULL DEFAULT 1,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE packages (
    id {{ID}},
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    price BIGINT NOT NULL,
    duration_days BIGINT NOT NULL,
    daily_limit BIGINT NOT NULL,
    sort_order BIGINT NOT NULL DEFAULT 0,
    enabled BIGINT NOT NULL DEFAULT 1,
    stock BIGINT,
    per_user_limit BIGINT,
    sold BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX packages_enabled_sort ON packages (enabled, sort_order);

CREATE TABLE payment_orders (
    id {{ID}},
    out_trade_no TEXT NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users (id),
    kind TEXT NOT NULL,
    package_id BIGINT REFERENCES packages (id),
    amount BIGINT NOT NULL,
    list_amount BIGINT NOT NULL,
    credit_amount BIGINT NOT NULL DEFAULT 0,
    coupon_id BIGINT,
    status TEXT NOT NULL DEFAULT 'pending',
    pay_method TEXT NOT NULL DEFAULT 'credit',
    pay_type TEXT,
    trade_no TEXT,
    subject TEXT NOT NULL DEFAULT '',
    flags TEXT,
    last_notify TEXT,
    expires_at BIGINT NOT NULL,
    paid_at BIGINT,
    fulfilled_at BIGINT,
    refunded_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX payment_orders_out_trade_no ON payment_orders (out_trade_no);
CREATE INDEX payment_orders_user ON payment_orders (user_id, created_at);
CREATE INDEX payment_orders_status ON payment_orders (status, created_at);

CREATE TABLE user_packages (
    id {{ID}},
    user_id BIGINT NOT NULL REFERENCES users (id),
    package_id BIGINT NOT NULL REFERENCES packages (id),
    order_id BIGINT REFERENCES payment_orders (id),
    name TEXT NOT NULL,
    daily_limit BIGINT NOT NULL,
    duration_days BIGINT NOT NULL,
    paid_amount BIGINT NOT NULL DEFAULT 0,
    source TEXT NOT NULL,
    status TEXT NOT NULL,
    starts_at BIGINT NOT NULL,
    ends_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX user_packages_user_status ON user_packages (user_id, status, starts_at);
CREATE INDEX user_packages_status_ends ON user_packages (status, ends_at);

CREATE TABLE daily_usage (
    user_id BIGINT NOT NULL REFERENCES users (id),
    business_date TEXT NOT NULL,
    package_used BIGINT NOT NULL DEFAULT 0,
    balance_used BIGINT NOT NULL DEFAULT 0,
    requests BIGINT NOT NULL DEFAULT 0,
    user_package_id BIGINT,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (user_id, business_date)
);

CREATE TABLE holds (
    id {{ID}},
    user_id BIGINT NOT NULL REFERENCES users (id),
    api_key_id BIGINT,
    amount BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX holds_user ON holds (user_id);
CREATE INDEX holds_expires ON holds (expires_at);

CREATE TABLE usage_logs (
    id {{ID}},
    request_id TEXT NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users (id),
    api_key_id BIGINT,
    upstream_id BIGINT,
    endpoint TEXT NOT NULL,
    model TEXT NOT NULL,
    status_code BIGINT NOT NULL,
    streamed BIGINT NOT NULL DEFAULT 0,
    input_tokens BIGINT NOT NULL DEFAULT 0,
    cached_tokens BIGINT NOT NULL DEFAULT 0,
    output_tokens BIGINT NOT NULL DEFAULT 0,
    reasoning_tokens BIGINT NOT NULL DEFAULT 0,
    cost BIGINT NOT NULL DEFAULT 0,
    package_cost BIGINT NOT NULL DEFAULT 0,
    balance_cost BIGINT NOT NULL DEFAULT 0,
    estimated BIGINT NOT NULL DEFAULT 0,
    first_byte_ms BIGINT,
    total_ms BIGINT,
    business_date TEXT NOT NULL,
    error TEXT,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX usage_logs_request_id ON usage_logs (request_id);
CREATE INDEX usage_logs_user_created ON usage_logs (user_id, created_at);
CREATE INDEX usage_logs_created ON usage_logs (created_at);

CREATE TABLE ledger_entries (
    id {{ID}},
    user_id BIGINT NOT NULL REFERENCES users (id),
    kind TEXT NOT NULL,
    amount BIGINT NOT NULL,
    balance_after BIGINT NOT NULL,
    package_amount BIGINT NOT NULL DEFAULT 0,
    user_package_id BIGINT,
    business_date TEXT,
    reference TEXT,
    note TEXT,
    actor_id BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX ledger_entries_user_created ON ledger_entries (user_id, created_at);
CREATE INDEX ledger_entries_reference ON ledger_entries (reference);

CREATE TABLE payment_notifies (
    id {{ID}},
    out_trade_no TEXT,
    outcome TEXT NOT NULL,
    params TEXT NOT NULL,
    remote_addr TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX payment_notifies_order ON payment_notifies (out_trade_no);

CREATE TABLE system_settings (
    key TEXT NOT NULL PRIMARY KEY,
    value TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

CREATE TABLE audit_logs (
    id {{ID}},
    actor_id BIGINT,
    action TEXT NOT NULL,
    target TEXT,
    before_value TEXT,
    after_value TEXT,
    ip TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX audit_logs_created ON audit_logs (created_at);

CREATE TABLE oauth_identities (
    id {{ID}},
    user_id BIGINT NOT NULL REFERENCES users (id),
    provider TEXT NOT NULL,
    subject TEXT NOT NULL,
    username TEXT,
    trust_level BIGINT,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX oauth_identities_subject ON oauth_identities (provider, subject);

CREATE TABLE job_leases (
    name TEXT NOT NULL PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);
