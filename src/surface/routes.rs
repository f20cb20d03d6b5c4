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

use crate::domain::telemetry::{self, RandomRequestId};
use crate::runtime::state::AppState;

const REQUEST_ID: header::HeaderName = header::HeaderName::from_static("x-request-id");

/// The Content-Security-Policy on every answer: scripts, styles and everything else from this
/// origin only (htmx and the CSS are vendored under /static), no inline script or style, no
/// framing. `form-action` is deliberately absent: the payment page posts its signed form to the
/// configured gateway, which may redirect on to another host, and browsers check redirects too.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

/// Every route of the application with its state applied.
pub fn router(state: AppState) -> Router {
    let trusted: crate::foundation::client_ip::TrustedProxies = state.config.trusted_proxies.as_slice().into();
    let mut routes = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(crate::surface::api::router())
        .merge(crate::surface::v1::router())
        .merge(crate::surface::web::router())
        .merge(crate::surface::web::pay_page::router());
    if state.config.pay_sandbox {
        tracing::warn!(
            "PAYMENT SANDBOX IS ON (GATEWAY_PAY_SANDBOX=true): a simulated gateway is mounted at /sandbox/epay; \
             never run a real shop like this"
        );
        routes = routes.merge(crate::surface::web::pay_sandbox::router());
    }
    if state.config.public_url.starts_with("https://") {
        // Innermost, so every cookie any handler sets passes through it.
        routes = routes.layer(axum::middleware::map_response(mark_cookies_secure));
    }
    catch_panics(routes.fallback(fallback))
        .layer(axum::middleware::from_fn_with_state(state.clone(), refuse_while_database_down))
        .layer(axum::middleware::from_fn(telemetry::track_http))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<_>| {
            let id = request.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
            let client = request.extensions().get::<crate::foundation::client_ip::ClientIp>().and_then(|c| c.0);
            let client = client.map(|ip| ip.to_string()).unwrap_or_default();
            tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id, client = %client)
        }))
        // Outside the trace layer, so the request span names the resolved client.
        .layer(axum::middleware::from_fn_with_state(trusted, crate::foundation::client_ip::resolve))
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

/// A handler that panics answers a 500 in its surface's error shape (OpenAI's on `/v1`,
/// `{"error":{..}}` on `/api`, a page elsewhere) instead of dropping the connection; the
/// panic text is logged, never sent. The panic layer marks its answer, the outer
/// middleware (which still has the request path) shapes it.
fn catch_panics<S: Clone + Send + Sync + 'static>(routes: Router<S>) -> Router<S> {
    routes
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(on_panic))
        .layer(axum::middleware::from_fn(shape_panic))
}

/// Marks the answer [`on_panic`] built, for [`shape_panic`].
#[derive(Clone, Copy)]
struct Panicked;

fn on_panic(payload: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let text = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("(no message)");
    let text: String = text.chars().take(500).collect();
    tracing::error!(panic = %text, "a request handler panicked; answered 500");
    let mut response = StatusCode::INTERNAL_SERVER_ERROR.into_response();
    response.extensions_mut().insert(Panicked);
    response
}

async fn shape_panic(request: Request, next: axum::middleware::Next) -> Response {
    // Only a page needs the request's headers (its language); `/v1` and `/api`, the hot
    // paths, copy nothing.
    let surface = Surface::of(request.uri().path());
    let headers = matches!(surface, Surface::Page).then(|| request.headers().clone()).unwrap_or_default();
    let response = next.run(request).await;
    if response.extensions().get::<Panicked>().is_some() {
        surface.answer(&headers, crate::foundation::error::Error::internal("a request handler panicked"))
    } else {
        response
    }
}

/// The part of the site a path belongs to: each answers errors in its own shape.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Surface {
    /// `/api`: `{"error": {"code", "message"}}`.
    Api,
    /// `/v1`: the OpenAI error shape.
    V1,
    /// Everything else: a readable page in the request's language.
    Page,
}

impl Surface {
    fn of(path: &str) -> Surface {
        if path.starts_with("/api/") || path == "/api" {
            Surface::Api
        } else if path.starts_with("/v1/") || path == "/v1" {
            Surface::V1
        } else {
            Surface::Page
        }
    }

    /// `err` in this surface's shape (`headers` pick a page's language).
    fn answer(self, headers: &axum::http::HeaderMap, err: crate::foundation::error::Error) -> Response {
        match self {
            Surface::Api => crate::surface::api::error::ApiError(err).into_response(),
            Surface::V1 => crate::domain::proxy::error::ProxyError::from(err).into_response(),
            Surface::Page => crate::surface::web::error_page_for_headers(headers, &err),
        }
    }
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
    let surface = Surface::of(path);
    let exempt = surface == Surface::V1
        || path.starts_with("/static/")
        || matches!(path, "/healthz" | "/readyz" | "/metrics" | "/favicon.ico");
    if exempt {
        return next.run(request).await;
    }
    surface.answer(request.headers(), crate::foundation::error::Error::from(down))
}

/// Unknown paths answer in the shape of the surface they were aimed at.
async fn fallback(request: Request) -> Response {
    let path = request.uri().path();
    match Surface::of(path) {
        Surface::Api => crate::surface::api::not_found().into_response(),
        Surface::V1 => (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": { "message": format!("unknown route {path}"), "type": "invalid_request_error", "code": "not_found" } })),
        )
            .into_response(),
        Surface::Page => crate::surface::web::not_found_for(request.headers()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt;

    /// A router whose handlers panic, behind the same panic handling as the real one.
    fn panicking() -> Router {
        async fn boom() -> &'static str {
            panic!("secret-in-panic sk-live-123")
        }
        async fn fine() -> &'static str {
            "ok"
        }
        catch_panics(
            Router::new()
                .route("/api/boom", get(boom))
                .route("/v1/responses", get(boom))
                .route("/dashboard", get(boom))
                .route("/api/fine", get(fine)),
        )
    }

    async fn call(path: &str) -> (StatusCode, String, String) {
        let request = axum::http::Request::get(path).body(axum::body::Body::empty()).unwrap();
        let response = panicking().oneshot(request).await.unwrap();
        let status = response.status();
        let kind = response.headers().get(header::CONTENT_TYPE).map(|v| v.to_str().unwrap().to_string());
        let body = axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap();
        (status, kind.unwrap_or_default(), String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn a_panicking_handler_answers_500_in_its_surfaces_shape_without_the_panic_text() {
        let (status, kind, body) = call("/api/boom").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(kind.starts_with("application/json"), "{kind}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json, json!({"error": {"code": "internal_error", "message": "internal error"}}));

        let (status, _, body) = call("/v1/responses").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["error"]["type"], "server_error", "{body}");
        assert_eq!(json["error"]["code"], "internal_error", "{body}");
        assert_eq!(json["error"]["message"], "internal error", "{body}");

        let (status, kind, body) = call("/dashboard").await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert!(kind.starts_with("text/html"), "{kind}");
        assert!(!body.contains("secret-in-panic") && !body.contains("sk-live"), "{body}");
        for path in ["/api/boom", "/v1/responses"] {
            let (_, _, body) = call(path).await;
            assert!(!body.contains("secret-in-panic") && !body.contains("panicked"), "{path}: {body}");
        }
        // Answers that did not panic pass through untouched.
        assert_eq!(call("/api/fine").await, (StatusCode::OK, "text/plain; charset=utf-8".into(), "ok".into()));
    }

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
