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

-- Coupons: a discount at purchase. `used` counts paid uses only; `coupon_redemptions`
-- has one row per paid order that used a coupon (per-user limits count these).
-- `percent_off` is micro-units of a percent (12.5% = 12500000); `package_ids` is a JSON
-- array of package ids, NULL for every package.
CREATE TABLE coupons (
    id {{ID}},
    code TEXT NOT NULL,
    percent_off BIGINT,
    amount_off BIGINT,
    package_ids TEXT,
    applies_to_topup BIGINT NOT NULL DEFAULT 0,
    valid_from BIGINT,
    valid_until BIGINT,
    max_uses BIGINT,
    max_uses_per_user BIGINT,
    used BIGINT NOT NULL DEFAULT 0,
    enabled BIGINT NOT NULL DEFAULT 1,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX coupons_code ON coupons (code);

CREATE TABLE coupon_redemptions (
    id {{ID}},
    coupon_id BIGINT NOT NULL REFERENCES coupons (id),
    user_id BIGINT NOT NULL REFERENCES users (id),
    order_id BIGINT NOT NULL REFERENCES payment_orders (id),
    discount BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX coupon_redemptions_order ON coupon_redemptions (order_id);
CREATE INDEX coupon_redemptions_coupon_user ON coupon_redemptions (coupon_id, user_id);
