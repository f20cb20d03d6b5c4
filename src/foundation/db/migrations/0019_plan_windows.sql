-- Plans with several windows (issue 19). Every limit is optional USD in micro-units
-- (NULL = no limit in that window); `models` is a comma-separated list (NULL = all).
-- A user package copies its package's limits when it is given, as it copies daily_limit.
ALTER TABLE packages ADD COLUMN five_hour_limit BIGINT;
ALTER TABLE packages ADD COLUMN weekly_limit BIGINT;
ALTER TABLE packages ADD COLUMN monthly_limit BIGINT;
ALTER TABLE packages ADD COLUMN total_limit BIGINT;
ALTER TABLE packages ADD COLUMN models TEXT;
ALTER TABLE user_packages ADD COLUMN five_hour_limit BIGINT;
ALTER TABLE user_packages ADD COLUMN weekly_limit BIGINT;
ALTER TABLE user_packages ADD COLUMN monthly_limit BIGINT;
ALTER TABLE user_packages ADD COLUMN total_limit BIGINT;
ALTER TABLE user_packages ADD COLUMN models TEXT;
-- NULL = the admin default (`default_billing_preference`).
ALTER TABLE users ADD COLUMN billing_preference TEXT;
-- A user's own 5-hour spending cap (USD micro-units).
ALTER TABLE users ADD COLUMN five_hour_cap BIGINT;
-- A key's own daily USD cap and the most requests it may run at once.
ALTER TABLE api_keys ADD COLUMN daily_cap BIGINT;
ALTER TABLE api_keys ADD COLUMN max_concurrency BIGINT;

-- What was spent in each window: `scope` is `p:<user_package_id>` (a package's
-- windows), `u:<user_id>` (a user's 5-hour cap) or `k:<api_key_id>` (a key's daily
-- cap); `kind` is 5h, day, week, month or total; `period` names the window among its
-- kind (business date, Monday's date, YYYY-MM, `total`, or a 5-hour block's start in
-- micro-seconds); `starts_at` is the window's start (used to find the running block).
CREATE TABLE window_usage (
    scope TEXT NOT NULL,
    kind TEXT NOT NULL,
    period TEXT NOT NULL,
    starts_at BIGINT NOT NULL,
    used BIGINT NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (scope, kind, period)
);
CREATE INDEX window_usage_blocks ON window_usage (scope, kind, starts_at);

-- The day windows of packages in force until now were counted per user in daily_usage;
-- carry them over so an upgrade in the middle of a day gives no fresh allowance.
INSERT INTO window_usage (scope, kind, period, starts_at, used, updated_at)
SELECT 'p:' || CAST(user_package_id AS TEXT), 'day', business_date, 0, package_used, updated_at
FROM daily_usage WHERE user_package_id IS NOT NULL AND package_used > 0;
