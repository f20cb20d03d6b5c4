-- Packages and payments: what a fulfilment did to an order, and the state of the
-- built-in payment sandbox (a simulated gateway; only used with GATEWAY_PAY_SANDBOX=true).

ALTER TABLE payment_orders ADD COLUMN user_package_id BIGINT;
ALTER TABLE payment_orders ADD COLUMN fulfilment TEXT;
ALTER TABLE payment_orders ADD COLUMN granted_days BIGINT;

CREATE TABLE sandbox_trades (
    id {{ID}},
    trade_no TEXT NOT NULL,
    pid TEXT NOT NULL,
    out_trade_no TEXT NOT NULL,
    pay_type TEXT NOT NULL,
    name TEXT NOT NULL,
    money TEXT NOT NULL,
    notify_url TEXT NOT NULL,
    return_url TEXT NOT NULL,
    param TEXT,
    status TEXT NOT NULL DEFAULT 'unpaid',
    notify_attempts BIGINT NOT NULL DEFAULT 0,
    notified BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    paid_at BIGINT
);
CREATE UNIQUE INDEX sandbox_trades_trade_no ON sandbox_trades (trade_no);
CREATE UNIQUE INDEX sandbox_trades_order ON sandbox_trades (pid, out_trade_no);
