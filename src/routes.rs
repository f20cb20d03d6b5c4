//! The whole route table, assembled in one place, plus the layers every route shares.

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tower_http::request_id::{PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::trace::TraceLayer;

use crate::app::AppState;
use crate::telemetry::{self, RandomRequestId};

const REQUEST_ID: header::HeaderName = header::HeaderName::from_static("x-request-id");

/// The Content-Security-Policy on every answer: scripts, styles and everything else from this
/// origin only (htmx and the CSS are vendored under /static), no inline script or style, no
/// framing. `form-action` is deliberately absent: the payment page posts its signed form to the
/// configured gateway, which may redirect on to another host, and browsers check redirects too.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// Every route of the application with its state applied.
pub fn router(state: AppState) -> Router {
    let trusted: crate::client_ip::TrustedProxies = state.config.trusted_proxies.as_slice().into();
    let mut routes = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(crate::api::router())
        .merge(crate::proxy::router())
        .merge(crate::web::router())
        .merge(crate::payment::page::router());
    if state.config.pay_sandbox {
        tracing::warn!(
            "PAYMENT SANDBOX IS ON (GATEWAY_PAY_SANDBOX=true): a simulated gateway is mounted at /sandbox/epay; \
             never run a real shop like this"
        );
        routes = routes.merge(crate::payment::sandbox::router());
    }
    if state.config.public_url.starts_with("https://") {
        // Innermost, so every cookie any handler sets passes through it.
        routes = routes.layer(axum::middleware::map_response(mark_cookies_secure));
    }
    routes
        .fallback(fallback)
        .layer(axum::middleware::from_fn_with_state(state.clone(), refuse_while_database_down))
        .layer(axum::middleware::from_fn(telemetry::track_http))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<_>| {
            let id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
            let client = request.extensions().get::<crate::client_ip::ClientIp>().and_then(|c| c.0);
            let client = client.map(|ip| ip.to_string()).unwrap_or_default();
            tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id, client = %client)
        }))
        // Outside the trace layer, so the request span names the resolved client.
        .layer(axum::middleware::from_fn_with_state(trusted, crate::client_ip::resolve))
        .layer(SetRequestIdLayer::new(REQUEST_ID, RandomRequestId))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ))
        .layer(SetResponseHeaderLayer::if_not_present(
            header::REFERRER_POLICY,
            HeaderValue::from_static("strict-origin-when-cross-origin"),
        ))
        .with_state(state)
}

/// Adds `Secure` to every `Set-Cookie` (language, pre-session, session, OAuth flow, and the
/// ones that clear them) when the public URL is https, so none can travel over plain http.
async fn mark_cookies_secure(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let cookies: Vec<HeaderValue> = headers.get_all(header::SET_COOKIE).iter().cloned().collect();
    if cookies.is_empty() {
        return response;
    }
    headers.remove(header::SET_COOKIE);
    for cookie in cookies {
        let secured = cookie.to_str().ok().and_then(with_secure).and_then(|c| HeaderValue::from_str(&c).ok());
        headers.append(header::SET_COOKIE, secured.unwrap_or(cookie));
    }
    response
}

/// The cookie with `; Secure` appended, or `None` when it already has the attribute.
fn with_secure(cookie: &str) -> Option<String> {
    let has = cookie.split(';').skip(1).any(|attr| attr.trim().eq_ignore_ascii_case("secure"));
    (!has).then(|| format!("{cookie}; Secure"))
}

/// `GET /metrics`, behind the metrics token when one is configured.
async fn metrics(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    telemetry::metrics_answer(state.config.metrics_token.as_deref(), &headers)
}

async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok", "version": env!("CARGO_PKG_VERSION") }))
}

async fn readyz(State(state): State<AppState>) -> Response {
    match state.db.ping().await {
        Ok(()) => Json(json!({ "status": "ready", "database": state.config.database_kind() })).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, Json(json!({ "status": "unavailable", "database": "unreachable" })))
                .into_response()
        }
    }
}

/// While the health probe finds the database down, pages and `/api` calls (all of
/// which need it) are refused at once in their surface's shape rather than after the
/// pool's acquire timeout. `/v1` is left to the proxy, which serves users it holds
/// headroom hints for; health, metrics and static files need no database.
async fn refuse_while_database_down(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let Err(down) = state.db.available() else {
        return next.run(request).await;
    };
    let path = request.uri().path();
    let exempt = ["/v1/", "/static/"].iter().any(|p| path.starts_with(p))
        || matches!(path, "/healthz" | "/readyz" | "/metrics" | "/favicon.ico");
    if exempt {
        return next.run(request).await;
    }
    let err = crate::error::Error::from(down);
    if path.starts_with("/api/") || path == "/api" {
        crate::api::error::ApiError(err).into_response()
    } else {
        crate::web::error_page_for_headers(request.headers(), &err)
    }
}

/// Unknown paths answer in the shape of the surface they were aimed at.
async fn fallback(request: Request) -> Response {
    let path = request.uri().path();
    if path.starts_with("/api/") || path == "/api" {
        crate::api::not_found().into_response()
    } else if path.starts_with("/v1/") {
        (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": { "message": format!("unknown route {path}"), "type": "invalid_request_error", "code": "not_found" } })),
        )
            .into_response()
    } else {
        crate::web::not_found_for(request.headers())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_is_added_once() {
        assert_eq!(with_secure("cg_lang=en; Path=/").as_deref(), Some("cg_lang=en; Path=/; Secure"));
        assert_eq!(with_secure("cg_session=x; Path=/; HttpOnly; Secure"), None);
        assert_eq!(with_secure("cg_session=x; Path=/; secure ; HttpOnly"), None);
        // A value that merely contains the word is not the attribute.
        assert!(with_secure("Secure=1; Path=/").is_some());
    }

    #[tokio::test]
    async fn every_set_cookie_gets_secure() {
        let mut response = Response::new(axum::body::Body::empty());
        for c in ["a=1; Path=/", "b=2; Path=/; Secure"] {
            response.headers_mut().append(header::SET_COOKIE, HeaderValue::from_static(c));
        }
        let response = mark_cookies_secure(response).await;
        let all: Vec<_> = response.headers().get_all(header::SET_COOKIE).iter().map(|v| v.to_str().unwrap()).collect();
        assert_eq!(all, ["a=1; Path=/; Secure", "b=2; Path=/; Secure"]);
    }
}
