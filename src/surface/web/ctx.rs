//! What every page needs to know about its request: the language, the signed-in user
//! (if any), the CSRF token for its forms and where it is. Also the extractors that
//! send guests to `/login` and non-admins to a 403 page, and the form extractor that
//! refuses posts without a valid CSRF token.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde::de::DeserializeOwned;

use super::i18n::{self, Lang};
use crate::domain::auth::extract::{cookie_value, csrf_matches, csrf_token};
use crate::domain::auth::sessions::{self, SESSION_COOKIE};
use crate::domain::auth::users::User;
use crate::runtime::state::AppState;

/// Cookie holding the chosen language (`en` or `zh`).
pub const LANG_COOKIE: &str = "cg_lang";
/// Cookie binding the CSRF token of forms shown before sign-in (login, register, setup).
pub const PRE_COOKIE: &str = "cg_pre";

/// The per-request facts the layout and forms use.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub lang: Lang,
    /// The signed-in user's email and role, for the navigation.
    pub email: Option<String>,
    pub is_admin: bool,
    pub csrf: String,
    /// The request path, to mark the current navigation entry and come back after a language switch.
    pub path: String,
    pub asset_v: &'static str,
    /// The business time zone the page's times are in.
    pub zone: &'static str,
    /// Cookies the response must set (a fresh pre-session CSRF cookie).
    pub set_cookies: Vec<String>,
}

impl Ctx {
    /// The translation of a dictionary key in the page's language.
    pub fn t(&self, key: &str) -> &'static str {
        i18n::t(self.lang, key)
    }

    /// A domain message (field error, refusal) in the page's language.
    pub fn msg(&self, message: &str) -> String {
        i18n::message(self.lang, message)
    }

    /// A text the domain stored in English (order subject, ledger note) in the page's language.
    pub fn stored(&self, text: &str) -> String {
        i18n::stored_text(self.lang, text)
    }

    pub fn lang_code(&self) -> &'static str {
        self.lang.html_code()
    }

    /// `"active"` when `prefix` is the current section, for the navigation CSS.
    pub fn nav(&self, prefix: &str) -> &'static str {
        if self.path.starts_with(prefix) {
            "active"
        } else {
            ""
        }
    }

    /// The footer line naming the business time zone.
    pub fn footer(&self) -> String {
        self.t("footer.zone").replace("{zone}", self.zone)
    }

    /// A context with no user and no form, for error pages.
    pub fn bare(lang: Lang) -> Ctx {
        Ctx {
            lang,
            email: None,
            is_admin: false,
            csrf: String::new(),
            path: "/".into(),
            asset_v: super::assets::version(),
            zone: "Asia/Shanghai",
            set_cookies: Vec::new(),
        }
    }

    /// The link that switches to the other language and comes back here.
    pub fn lang_switch_href(&self) -> String {
        let query = serde_urlencoded::to_string([("next", self.path.as_str())]).unwrap_or_default();
        format!("/lang/{}?{query}", self.lang.other().code())
    }

    /// `"active"` for the admin sub-navigation entry of the current page.
    pub fn sub(&self, prefix: &str) -> &'static str {
        let here = if prefix == "/admin" { self.path == "/admin" } else { self.path.starts_with(prefix) };
        if here {
            "active"
        } else {
            ""
        }
    }

    /// The JSON for `hx-headers`, so htmx requests carry the CSRF token as a header.
    pub fn hx_headers(&self) -> String {
        serde_json::json!({ "x-csrf-token": self.csrf }).to_string()
    }
}

fn lang_of(parts: &Parts) -> Lang {
    lang_from_headers(&parts.headers)
}

/// The language cookie if set, otherwise the best match of `Accept-Language`.
pub fn lang_from_headers(headers: &HeaderMap) -> Lang {
    let cookie = headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).find_map(|line| {
        line.split(';').find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == LANG_COOKIE).then(|| Lang::parse(v)).flatten()
        })
    });
    if let Some(lang) = cookie {
        return lang;
    }
    let accept = headers.get(header::ACCEPT_LANGUAGE).and_then(|v| v.to_str().ok()).unwrap_or("");
    i18n::from_accept_language(accept)
}

fn base_ctx(parts: &Parts, state: &AppState, lang: Lang) -> Ctx {
    Ctx {
        lang,
        email: None,
        is_admin: false,
        csrf: String::new(),
        path: parts.uri.path().to_string(),
        asset_v: super::assets::version(),
        zone: state.calendar().zone_name(),
        set_cookies: Vec::new(),
    }
}

/// Marker for the CSRF token of pre-sign-in forms, kept apart from session tokens.
fn pre_basis(pre: &str) -> String {
    format!("pre:{pre}")
}

/// A page anyone may see (login, register, setup). Carries a pre-session CSRF token
/// and, when a valid session cookie came along, the user.
pub struct Guest {
    pub ctx: Ctx,
    pub user: Option<User>,
}

impl FromRequestParts<AppState> for Guest {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let mut ctx = base_ctx(parts, state, lang_of(parts));
        let pre = match cookie_value(parts, PRE_COOKIE).filter(|v| v.len() >= 20) {
            Some(pre) => pre,
            None => {
                let pre = crate::domain::auth::random_token(32);
                ctx.set_cookies.push(format!("{PRE_COOKIE}={pre}; Path=/; HttpOnly; SameSite=Lax"));
                pre
            }
        };
        ctx.csrf = csrf_token(state.config.secret_bytes(), &pre_basis(&pre));
        let mut user = None;
        if let Some(token) = cookie_value(parts, SESSION_COOKIE) {
            if let Ok(Some((_, found))) = sessions::lookup(&state.db, &token, state.now()).await {
                if found.is_active() {
                    ctx.email = Some(found.email.clone());
                    ctx.is_admin = found.is_admin();
                    // The navigation's logout form then carries the session's token.
                    ctx.csrf = csrf_token(state.config.secret_bytes(), &token);
                    user = Some(found);
                }
            }
        }
        Ok(Guest { ctx, user })
    }
}

/// A signed-in, active user on a web page. Guests are redirected to `/login?next=…`.
pub struct Signed {
    pub ctx: Ctx,
    pub user: User,
    pub session_id: i64,
}

impl FromRequestParts<AppState> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let lang = lang_of(parts);
        let to_login = || {
            let next = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            let query = serde_urlencoded::to_string([("next", next)]).unwrap_or_default();
            Redirect::to(&format!("/login?{query}")).into_response()
        };
        let Some(token) = cookie_value(parts, SESSION_COOKIE) else {
            return Err(to_login());
        };
        let (session_id, user) = match sessions::lookup(&state.db, &token, state.now()).await {
            Ok(Some(found)) => found,
            Ok(None) => return Err(to_login()),
            Err(e) => return Err(super::error_page_in(lang, &e)),
        };
        if !user.is_active() {
            return Err(super::message_page(lang, StatusCode::FORBIDDEN, "error.suspended_title", "error.suspended"));
        }
        let mut ctx = base_ctx(parts, state, lang);
        ctx.email = Some(user.email.clone());
        ctx.is_admin = user.is_admin();
        ctx.csrf = csrf_token(state.config.secret_bytes(), &token);
        Ok(Signed { ctx, user, session_id })
    }
}

/// A signed-in admin; other users get a 403 page.
pub struct AdminPage(pub Signed);

impl FromRequestParts<AppState> for AdminPage {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let signed = Signed::from_request_parts(parts, state).await?;
        if !signed.user.is_admin() {
            // The signed-in header (navigation, email, log-out) stays: the user is signed in.
            let ctx = &signed.ctx;
            let page = super::message_with(
                ctx,
                StatusCode::FORBIDDEN,
                ctx.t("error.forbidden_title"),
                ctx.t("error.admin_only"),
            );
            return Err(page);
        }
        Ok(AdminPage(signed))
    }
}

/// A URL-encoded form of a signed-in page whose `_csrf` field (or `x-csrf-token`
/// header, for htmx) matches the session's token.
pub struct CsrfForm<T>(pub T);

/// A form shown before sign-in (login, register, setup): its token is bound to the
/// pre-session cookie instead.
pub struct GuestForm<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for CsrfForm<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        checked_form(req, state, false).await.map(CsrfForm)
    }
}

impl<T: DeserializeOwned> FromRequest<AppState> for GuestForm<T> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        checked_form(req, state, true).await.map(GuestForm)
    }
}

async fn checked_form<T: DeserializeOwned>(req: Request, state: &AppState, guest: bool) -> Result<T, Response> {
    let (parts, body) = req.into_parts();
    let lang = lang_of(&parts);
    let bad_form = || super::message_page(lang, StatusCode::BAD_REQUEST, "error.bad_form_title", "error.bad_form");
    let bytes = Bytes::from_request(Request::from_parts(parts.clone(), body), state).await.map_err(|_| bad_form())?;
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(&bytes).unwrap_or_default();
    let presented = parts
        .headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| pairs.iter().find(|(k, _)| k == "_csrf").map(|(_, v)| v.clone()))
        .unwrap_or_default();
    let secret = state.config.secret_bytes();
    let by_session = cookie_value(&parts, SESSION_COOKIE).is_some_and(|t| csrf_matches(secret, &t, &presented));
    let by_pre =
        guest && cookie_value(&parts, PRE_COOKIE).is_some_and(|p| csrf_matches(secret, &pre_basis(&p), &presented));
    if !(by_session || by_pre) {
        return Err(super::message_page(lang, StatusCode::FORBIDDEN, "error.csrf_title", "error.csrf"));
    }
    serde_urlencoded::from_bytes(&bytes).map_err(|_| bad_form())
}

/// Adds the context's pending cookies to a response.
pub fn with_cookies(ctx: &Ctx, mut response: Response) -> Response {
    for cookie in &ctx.set_cookies {
        if let Ok(value) = HeaderValue::from_str(cookie) {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
    response
}

/// Longest `next=` followed; longer ones are nobody's bookmark.
const MAX_NEXT_LEN: usize = 2048;

/// `next` when it is a path on this site, else `/dashboard` (no open redirects).
///
/// Only a local path is followed: it starts with one `/`, and holds no backslash, no
/// whitespace and no control character. Browsers drop tabs and newlines from a
/// `Location` and read `\` as `/`, so `/\t/evil.example` would become `//evil.example`;
/// a newline would also make the header value invalid.
pub fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if is_local_path(n) => n.to_string(),
        _ => "/dashboard".to_string(),
    }
}

fn is_local_path(n: &str) -> bool {
    let Some(rest) = n.strip_prefix('/') else { return false };
    n.len() <= MAX_NEXT_LEN
        && !rest.starts_with('/')
        && !n.chars().any(|c| c == '\\' || c.is_whitespace() || c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_login() {
        assert_eq!(safe_next(Some("/keys?x=1")), "/keys?x=1");
        assert_eq!(safe_next(Some("//evil.example")), "/dashboard");
        assert_eq!(safe_next(Some("https://evil.example")), "/dashboard");
        assert_eq!(safe_next(Some("/\\evil.example")), "/dashboard");
        assert_eq!(safe_next(None), "/dashboard");
        for hostile in ["/\t/evil.example", "/\n/x", "/\r\nSet-Cookie:x", "/\u{0}", "/\u{7f}", " /x", "/\u{2028}/x"] {
            assert_eq!(safe_next(Some(hostile)), "/dashboard", "{hostile:?}");
        }
        assert_eq!(safe_next(Some(&format!("/{}", "a".repeat(3000)))), "/dashboard");
    }
}
