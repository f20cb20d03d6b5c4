//! A LINUX DO Credit-compatible gateway simulator, mounted under `/sandbox/epay` only
//! when `GATEWAY_PAY_SANDBOX=true` (start-up logs a loud warning). It plays the gateway
//! for this site's own merchant account (the configured credit pid/key) with the same
//! signing code, so a purchase can be clicked through locally: set `credit.gateway_url`
//! to `{public_url}/sandbox/epay`.
//!
//! State lives in the `sandbox_trades` table (gateway trade numbers, paid/refunded).
//! "Pay" delivers the notify at once; if the merchant does not answer `success`, a
//! tracked task retries a bounded number of times.

use askama::Template;
use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use rand::Rng;
use serde_json::{json, Value};
use subtle::ConstantTimeEq;

use crate::domain::payment::collect_params;
use crate::domain::payment::epay::{self, Params, TRADE_SUCCESS};
use crate::foundation::clock::{from_micros, to_micros};
use crate::foundation::error::Result;
use crate::foundation::money::Money;
use crate::runtime::state::AppState;
use crate::surface::web::render_plain;

/// Where the sandbox is mounted.
pub const BASE: &str = "/sandbox/epay";
/// Notify deliveries per payment (one at once, the rest from a tracked task).
const NOTIFY_ATTEMPTS: u32 = 5;

/// The simulator's routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/sandbox/epay/pay/submit.php", get(submit).post(submit))
        .route("/sandbox/epay/cashier/{trade_no}", get(cashier))
        .route("/sandbox/epay/cashier/{trade_no}/pay", post(pay))
        .route("/sandbox/epay/cashier/{trade_no}/cancel", post(cancel))
        .route("/sandbox/epay/api.php", get(api).post(api))
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct Trade {
    trade_no: String,
    pid: String,
    out_trade_no: String,
    pay_type: String,
    name: String,
    money: String,
    notify_url: String,
    return_url: String,
    param: Option<String>,
    status: String,
    created_at: i64,
    paid_at: Option<i64>,
}

const TRADE_COLUMNS: &str =
    "trade_no, pid, out_trade_no, pay_type, name, money, notify_url, return_url, param, status, \
                             created_at, paid_at";

#[derive(Template)]
#[template(path = "sandbox_cashier.html")]
struct CashierPage {
    base: &'static str,
    name: String,
    money: String,
    out_trade_no: String,
    trade_no: String,
    status: String,
    return_url: String,
}

fn gateway_error(message: &str) -> Response {
    (StatusCode::OK, Json(json!({ "error_msg": message, "data": null }))).into_response()
}

async fn find_trade(state: &AppState, column: &str, value: &str) -> Result<Option<Trade>> {
    let sql = format!("SELECT {TRADE_COLUMNS} FROM sandbox_trades WHERE {column} = $1");
    Ok(sqlx::query_as::<_, Trade>(&sql).bind(value).fetch_optional(state.db.pool()).await?)
}

/// `pay/submit.php`: verifies the merchant's signature, records the trade and sends the
/// buyer to the cashier page.
async fn submit(State(state): State<AppState>, query: RawQuery, body: Bytes) -> Response {
    let params = collect_params(&query, &body);
    match register(&state, &params).await {
        Ok(Ok(trade_no)) => Redirect::to(&format!("{BASE}/cashier/{trade_no}")).into_response(),
        Ok(Err(message)) => gateway_error(message),
        Err(e) => crate::surface::web::error_page(&e),
    }
}

async fn register(state: &AppState, params: &Params) -> Result<std::result::Result<String, &'static str>> {
    let settings = state.settings.get().await?;
    let credit = &settings.credit;
    let get = |k: &str| params.get(k).map(String::as_str).unwrap_or("");
    if credit.pid.is_empty() || get("pid") != credit.pid {
        return Ok(Err("商户不存在 (unknown pid)"));
    }
    if !epay::verify(params, &credit.key) {
        return Ok(Err("签名校验失败 (bad signature)"));
    }
    for required in ["type", "out_trade_no", "notify_url", "return_url", "name", "money"] {
        if get(required).is_empty() {
            return Ok(Err("缺少参数 (missing parameter)"));
        }
    }
    let money_ok = get("money").split_once('.').is_some_and(|(_, d)| d.len() == 2)
        && Money::parse_cents(get("money")).is_ok_and(|m| m.is_positive());
    if !money_ok {
        return Ok(Err("金额格式错误 (money must be > 0 with two decimals)"));
    }
    let trade_no =
        format!("SBX{}{:06}", state.now().format("%Y%m%d%H%M%S"), rand::thread_rng().gen_range(0..1_000_000));
    sqlx::query(
        "INSERT INTO sandbox_trades (trade_no, pid, out_trade_no, pay_type, name, money, notify_url, return_url, param, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (pid, out_trade_no) DO NOTHING",
    )
    .bind(&trade_no)
    .bind(get("pid"))
    .bind(get("out_trade_no"))
    .bind(get("type"))
    .bind(get("name"))
    .bind(get("money"))
    .bind(get("notify_url"))
    .bind(get("return_url"))
    .bind(params.get("param").filter(|p| !p.is_empty()))
    .bind(to_micros(state.now()))
    .execute(state.db.pool())
    .await?;
    // Trying again after a Cancel opens the same trade again, as a cashier does while the
    // merchant's order is still payable ("Pay now" on the merchant's side is never dead).
    sqlx::query(
        "UPDATE sandbox_trades SET status = 'unpaid' WHERE pid = $1 AND out_trade_no = $2 AND status = 'cancelled'",
    )
    .bind(get("pid"))
    .bind(get("out_trade_no"))
    .execute(state.db.pool())
    .await?;
    let sql = format!("SELECT {TRADE_COLUMNS} FROM sandbox_trades WHERE pid = $1 AND out_trade_no = $2");
    let trade =
        sqlx::query_as::<_, Trade>(&sql).bind(get("pid")).bind(get("out_trade_no")).fetch_one(state.db.pool()).await?;
    if trade.money != get("money") {
        return Ok(Err("订单金额与已有订单不符 (amount differs from the existing order)"));
    }
    Ok(Ok(trade.trade_no))
}

fn cashier_page(trade: &Trade) -> Response {
    render_plain(
        StatusCode::OK,
        &CashierPage {
            base: BASE,
            name: trade.name.clone(),
            money: trade.money.clone(),
            out_trade_no: trade.out_trade_no.clone(),
            trade_no: trade.trade_no.clone(),
            status: trade.status.clone(),
            return_url: trade.return_url.clone(),
        },
    )
}

async fn cashier(
    State(state): State<AppState>,
    axum::extract::Path(trade_no): axum::extract::Path<String>,
) -> Response {
    match find_trade(&state, "trade_no", &trade_no).await {
        Ok(Some(trade)) => cashier_page(&trade),
        Ok(None) => crate::surface::web::not_found_page(),
        Err(e) => crate::surface::web::error_page(&e),
    }
}

/// The signed notify for a paid trade.
fn notify_params(trade: &Trade, key: &str) -> Params {
    let mut params: Params = [
        ("pid", trade.pid.clone()),
        ("trade_no", trade.trade_no.clone()),
        ("out_trade_no", trade.out_trade_no.clone()),
        ("type", trade.pay_type.clone()),
        ("name", trade.name.clone()),
        ("money", trade.money.clone()),
        ("trade_status", TRADE_SUCCESS.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if let Some(p) = &trade.param {
        params.insert("param".into(), p.clone());
    }
    epay::signed(params, key)
}

/// One delivery: true when the merchant answered `success`.
async fn deliver(state: &AppState, trade: &Trade, params: &Params) -> bool {
    let answer =
        state.http.get(&trade.notify_url).query(params).timeout(std::time::Duration::from_secs(15)).send().await;
    let ok = match answer {
        Ok(r) if r.status().is_success() => r.text().await.map(|t| t.trim() == "success").unwrap_or(false),
        _ => false,
    };
    let recorded = sqlx::query(
        "UPDATE sandbox_trades SET notify_attempts = notify_attempts + 1, notified = CASE WHEN $1 = 1 THEN 1 ELSE notified END \
         WHERE trade_no = $2",
    )
    .bind(i64::from(ok))
    .bind(&trade.trade_no)
    .execute(state.db.pool())
    .await;
    if let Err(e) = recorded {
        tracing::warn!(error = %e, "sandbox could not record a notify attempt");
    }
    ok
}

#[derive(serde::Deserialize)]
struct PayForm {
    #[serde(default)]
    notify: Option<String>,
}

/// "Pay": marks the trade paid, delivers the notify (retrying in a tracked task if the
/// merchant does not answer `success`) and returns the buyer to the merchant.
async fn pay(
    State(state): State<AppState>,
    axum::extract::Path(trade_no): axum::extract::Path<String>,
    axum::Form(form): axum::Form<PayForm>,
) -> Response {
    let result = async {
        let now = to_micros(state.now());
        sqlx::query(
            "UPDATE sandbox_trades SET status = 'paid', paid_at = $1 WHERE trade_no = $2 AND status = 'unpaid'",
        )
        .bind(now)
        .bind(&trade_no)
        .execute(state.db.pool())
        .await?;
        let trade = find_trade(&state, "trade_no", &trade_no).await?;
        let key = state.settings.get().await?.credit.key.clone();
        Ok::<_, crate::foundation::error::Error>((trade, key))
    }
    .await;
    let (trade, key) = match result {
        Ok((Some(t), key)) => (t, key),
        Ok((None, _)) => return crate::surface::web::not_found_page(),
        Err(e) => return crate::surface::web::error_page(&e),
    };
    if trade.status != "paid" {
        return cashier_page(&trade);
    }
    let params = notify_params(&trade, &key);
    if form.notify.as_deref() != Some("no") && !deliver(&state, &trade, &params).await {
        let (state2, trade2, params2) = (state.clone(), trade.clone(), params.clone());
        state.tasks.spawn(async move {
            for attempt in 1..NOTIFY_ATTEMPTS {
                tokio::time::sleep(std::time::Duration::from_secs(1 << attempt)).await;
                if deliver(&state2, &trade2, &params2).await {
                    return;
                }
            }
            tracing::warn!(trade_no = %trade2.trade_no, "sandbox gave up delivering a notify");
        });
    }
    let separator = if trade.return_url.contains('?') { '&' } else { '?' };
    let query = serde_urlencoded::to_string(&params).unwrap_or_default();
    Redirect::to(&format!("{}{separator}{query}", trade.return_url)).into_response()
}

async fn cancel(State(state): State<AppState>, axum::extract::Path(trade_no): axum::extract::Path<String>) -> Response {
    let result = async {
        sqlx::query("UPDATE sandbox_trades SET status = 'cancelled' WHERE trade_no = $1 AND status = 'unpaid'")
            .bind(&trade_no)
            .execute(state.db.pool())
            .await?;
        find_trade(&state, "trade_no", &trade_no).await
    }
    .await;
    match result {
        Ok(Some(trade)) => {
            // Back to the merchant with the order and the word that the buyer cancelled (no
            // signature: it proves nothing, the merchant shows its own order state with it).
            let separator = if trade.return_url.contains('?') { '&' } else { '?' };
            let query =
                serde_urlencoded::to_string([("out_trade_no", trade.out_trade_no.as_str()), ("cancelled", "1")])
                    .unwrap_or_default();
            Redirect::to(&format!("{}{separator}{query}", trade.return_url)).into_response()
        }
        Ok(None) => crate::surface::web::not_found_page(),
        Err(e) => crate::surface::web::error_page(&e),
    }
}

/// `api.php`: `act=order` queries a trade; `act=refund` (classic) or a POST without `act`
/// (LINUX DO Credit) refunds one. Both check the merchant pid and key.
async fn api(State(state): State<AppState>, method: axum::http::Method, query: RawQuery, body: Bytes) -> Response {
    let params = collect_params(&query, &body);
    match api_answer(&state, &params, method == axum::http::Method::POST).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => {
            e.log_if_internal();
            Json(json!({"code": -1, "msg": e.public_message()})).into_response()
        }
    }
}

async fn api_answer(state: &AppState, params: &Params, is_post: bool) -> Result<Value> {
    let settings = state.settings.get().await?;
    let credit = &settings.credit;
    let get = |k: &str| params.get(k).map(String::as_str).unwrap_or("");
    let key_ok: bool = credit.key.as_bytes().ct_eq(get("key").as_bytes()).into();
    if credit.pid.is_empty() || get("pid") != credit.pid || !key_ok {
        return Ok(json!({"code": -1, "msg": "商户ID或密钥错误 (wrong pid or key)"}));
    }
    let trade = if !get("trade_no").is_empty() {
        find_trade(state, "trade_no", get("trade_no")).await?
    } else {
        find_trade(state, "out_trade_no", get("out_trade_no")).await?
    };
    let Some(trade) = trade.filter(|t| t.pid == credit.pid) else {
        return Ok(json!({"code": -1, "msg": "订单不存在 (no such order)"}));
    };
    match get("act") {
        "order" => {
            let time = |t: i64| from_micros(t).format("%Y-%m-%d %H:%M:%S").to_string();
            Ok(json!({
                "code": 1, "msg": "succ", "trade_no": trade.trade_no, "out_trade_no": trade.out_trade_no,
                "type": trade.pay_type, "name": trade.name, "money": trade.money,
                "status": i64::from(trade.status == "paid"),
                "addtime": time(trade.created_at), "endtime": trade.paid_at.map(time),
            }))
        }
        "" | "refund" if is_post => refund(state, &trade, get("money")).await,
        _ => Ok(json!({"code": -1, "msg": "未知操作 (unknown act)"})),
    }
}

async fn refund(state: &AppState, trade: &Trade, money: &str) -> Result<Value> {
    let requested = Money::parse_cents(money).ok();
    if requested.is_none() || requested != Money::parse_cents(&trade.money).ok() {
        return Ok(json!({"code": -1, "msg": "退款金额必须等于订单金额 (refund the full amount)"}));
    }
    let done = sqlx::query("UPDATE sandbox_trades SET status = 'refunded' WHERE trade_no = $1 AND status = 'paid'")
        .bind(&trade.trade_no)
        .execute(state.db.pool())
        .await?;
    if done.rows_affected() == 1 {
        Ok(json!({"code": 1, "msg": "退款成功"}))
    } else {
        Ok(json!({"code": -1, "msg": format!("订单状态不允许退款 (status: {})", trade.status)}))
    }
}
