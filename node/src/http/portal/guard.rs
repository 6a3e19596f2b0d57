//! The portal's gate: every page request is resolved to a [`Viewer`] (the session cookie's
//! person, if any) and checked against the page's rule in [`super::PAGES`]; every POST must come
//! from this site and carry the session's CSRF token, and its form (bounded) is parsed here so
//! no handler can forget the check.

use axum::extract::{MatchedPath, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};

use super::form::Form;
use super::page::{Lang, PageError};
use crate::http::authz::{self, Need, Principal};
use crate::http::Ctx;

/// The session cookie (the same token as an API session; HttpOnly, SameSite=Strict), named per
/// portal port by [`scoped`].
pub(super) const SESSION_COOKIE: &str = "huitong_session";
/// The one-time token of the sign-in form (before there is a session to hold one).
pub(super) const LOGIN_COOKIE: &str = "huitong_login";
/// The language cookie (`zh` or `en`).
pub(super) const LANG_COOKIE: &str = "huitong_lang";
/// The form field that carries the CSRF token.
pub(super) const CSRF_FIELD: &str = "csrf";
/// Largest form body (a form has a few fields; uploads are not forms).
const MAX_FORM: usize = 64 * 1024;
/// Largest body of the catalogue entry form (up to 1,000 信息项 rows, percent-encoded).
const MAX_ENTRY_FORM: usize = 1024 * 1024;

/// Who is looking at a page.
#[derive(Clone, Debug)]
pub(super) struct Viewer {
    /// The signed-in person (`None` on public pages without a session).
    pub(super) principal: Option<Principal>,
    /// The language the pages are shown in.
    pub(super) lang: Lang,
    /// The path and query asked for (to come back to after sign-in).
    pub(super) path: String,
}

impl Viewer {
    /// The signed-in person's account.
    pub(super) fn account(&self) -> Option<&crate::accounts::Account> {
        match &self.principal {
            Some(Principal::Person { account, .. }) => Some(account),
            _ => None,
        }
    }

    /// The session's CSRF token ("" without a session).
    pub(super) fn csrf(&self) -> &str {
        match &self.principal {
            Some(Principal::Person { csrf, .. }) => csrf,
            _ => "",
        }
    }

    /// Whether the signed-in person holds `role`.
    pub(super) fn has(&self, role: crate::accounts::Role) -> bool {
        self.account().is_some_and(|a| a.has(role))
    }

    /// The principal the API functions act for. Only reached behind a rule that needs a
    /// person (the guard refuses otherwise); a public page has no principal to act for.
    pub(super) fn acting(&self) -> Result<Principal, PageError> {
        self.principal.clone().ok_or_else(|| {
            PageError::new(
                StatusCode::UNAUTHORIZED,
                self.lang.t("请先登录。", "Sign in first."),
            )
        })
    }
}

/// The name of a per-portal cookie: browsers keep cookies per host, not per port, so the
/// portals of several nodes on one machine (a testnet) each get their own by the port the
/// request names.
pub(super) fn scoped(headers: &HeaderMap, name: &str) -> String {
    let port = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.rsplit_once(':'))
        .map(|(_, p)| p)
        .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    match port {
        Some(p) => format!("{name}_{p}"),
        None => name.to_string(),
    }
}

/// The values of the cookies named `name` in the request's `Cookie` headers, in order.
fn cookies<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .filter(move |(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The value of cookie `name` in the request's `Cookie` headers.
pub(super) fn cookie<'a>(headers: &'a HeaderMap, name: &'a str) -> Option<&'a str> {
    cookies(headers, name).next()
}

/// How many cookies named `name` the request carries.
fn cookies_named(headers: &HeaderMap, name: &str) -> usize {
    cookies(headers, name).count()
}

/// Whether a POST comes from this portal's own pages: an `Origin` (or, without one, a
/// `Sec-Fetch-Site`) that names another site is refused. Browsers send one or the other on
/// every form POST; a request with neither is not a browser and carries no ambient cookie risk
/// beyond the CSRF token checked next.
fn same_site(headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    if let Some(origin) = headers.get(header::ORIGIN) {
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let named = origin
            .strip_prefix("http://")
            .or_else(|| origin.strip_prefix("https://"));
        return named.is_some() && named == host;
    }
    !headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "cross-site" || v == "same-site")
}

/// Whether the request's `Host` is the portal's public address (`portal.public_origin`), the
/// one name besides loopback it answers to off loopback.
fn is_public_host(ctx: &Ctx, headers: &HeaderMap) -> bool {
    let Ok(Some(public)) = ctx.state.config.public_host() else {
        return false;
    };
    headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .is_some_and(|h| h.eq_ignore_ascii_case(&public))
}

/// Compares without an early exit.
pub(super) fn same_token(a: &str, b: &str) -> bool {
    !a.is_empty()
        && a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// The middleware.
pub(crate) async fn guard(
    State(ctx): State<Ctx>,
    matched: Option<MatchedPath>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let lang = Lang::of(req.headers());
    let path = req
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_string(), |p| p.as_str().to_string());
    // A browser on this host may be steered by a DNS-rebinding page: the portal listens on
    // loopback only, so a request must name a loopback host.
    if !authz::host_is_loopback(req.headers()) && !is_public_host(&ctx, req.headers()) {
        return PageError::new(
            StatusCode::MISDIRECTED_REQUEST,
            lang.t(
                "门户只接受发往本机地址（127.0.0.1、localhost）或其公开地址（portal.public_origin）的请求。",
                "The portal answers requests addressed to a loopback name (127.0.0.1, localhost) or to its public address (portal.public_origin) only.",
            ),
        )
        .into_response();
    }
    let Some(need) = matched
        .as_ref()
        .and_then(|p| super::rule(req.method(), p.as_str()))
    else {
        return PageError::new(
            StatusCode::NOT_FOUND,
            lang.t("没有这个页面。", "There is no such page."),
        )
        .into_response();
    };
    let session_cookie = scoped(req.headers(), SESSION_COOKIE);
    if cookies_named(req.headers(), &session_cookie) > 1 {
        // Another program on this host (any port shares the cookie jar) may have planted a
        // second one for a path, to sign the person in as someone else there.
        return PageError::new(
            StatusCode::BAD_REQUEST,
            lang.t(
                "浏览器发来了两个会话 Cookie（可能由本机其他程序设置）。请清除本站点的 Cookie 后重新登录。",
                "The browser sent two session cookies (another program on this machine may have set one). Clear this site's cookies and sign in again.",
            ),
        )
        .into_response();
    }
    let principal = match cookie(req.headers(), &session_cookie) {
        Some(token) => match authz::person(&ctx, token).await {
            Ok(p) => p,
            Err(f) => return PageError::new(f.0, f.1.error).into_response(),
        },
        None => None,
    };
    if need != Need::Public {
        let Some(Principal::Person { account, .. }) = &principal else {
            if req.method() == Method::GET {
                let to = format!("/login?next={}", encode(&path));
                return Redirect::to(&to).into_response();
            }
            return PageError::new(
                StatusCode::UNAUTHORIZED,
                lang.t(
                    "登录已失效，请重新登录后再提交。",
                    "Your session has ended; sign in again, then submit again.",
                ),
            )
            .into_response();
        };
        if !authz::allows(need, account, ctx.state.is_hub()) {
            return PageError::new(StatusCode::FORBIDDEN, authz::refusal(need, account))
                .into_response();
        }
    }
    let viewer = Viewer {
        principal,
        lang,
        path,
    };
    let upload = matched
        .as_ref()
        .is_some_and(|p| super::UPLOADS.contains(&p.as_str()));
    let limit = if matched
        .as_ref()
        .is_some_and(|p| p.as_str() == "/catalogue/save")
    {
        MAX_ENTRY_FORM
    } else {
        MAX_FORM
    };
    let req = if req.method() == Method::POST {
        match checked_form(&viewer, need, (upload, limit), req).await {
            Ok(req) => req,
            Err(e) => return e.into_response(),
        }
    } else {
        req
    };
    let mut req = req;
    req.extensions_mut().insert(viewer);
    next.run(req).await
}

/// The CSRF token an upload's first part must carry: an upload's body is streamed to its
/// handler, which checks the token before it reads any file ([`super::upload`]).
#[derive(Clone, Debug)]
pub(super) struct UploadToken(pub(super) String);

/// Reads and checks a POST's form: same site, bounded, CSRF token present and right. The form
/// goes to the handler as a request extension. An upload page (`upload`) takes
/// `multipart/form-data` instead, passed on unread with the token it must carry.
async fn checked_form(
    viewer: &Viewer,
    need: Need,
    (upload, limit): (bool, usize),
    req: axum::extract::Request,
) -> Result<axum::extract::Request, PageError> {
    let lang = viewer.lang;
    let expired = || {
        PageError::new(
            StatusCode::FORBIDDEN,
            lang.t(
                "表单已过期或来自其他网站，已拒绝。请刷新页面后重试。",
                "The form expired or came from another site, so it was refused. Reload the page and try again.",
            ),
        )
    };
    if !same_site(req.headers()) {
        return Err(expired());
    }
    // A public form (sign-in) carries the one-time token of its own cookie, whether or not the
    // browser also holds a session; every other form the session's token.
    let expected = match (&viewer.principal, need) {
        (Some(Principal::Person { csrf, .. }), n) if n != Need::Public => csrf.clone(),
        _ => cookie(req.headers(), &scoped(req.headers(), LOGIN_COOKIE))
            .unwrap_or_default()
            .to_string(),
    };
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if upload && content_type.starts_with("multipart/form-data") && !expected.is_empty() {
        let mut req = req;
        req.extensions_mut().insert(UploadToken(expected));
        return Ok(req);
    }
    if !content_type.starts_with("application/x-www-form-urlencoded") {
        return Err(PageError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            lang.t(
                "只接受网页表单提交（application/x-www-form-urlencoded）。",
                "Only web forms (application/x-www-form-urlencoded) are accepted.",
            ),
        ));
    }
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        PageError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} {} KB{}",
                lang.t("提交的内容过大（超过", "The form is too large (over"),
                limit / 1024,
                lang.t("）。", ")."),
            ),
        )
    })?;
    let form = Form::parse(&bytes);
    if !same_token(form.get(CSRF_FIELD), &expected) {
        return Err(expired());
    }
    let mut req = axum::extract::Request::from_parts(parts, axum::body::Body::empty());
    req.extensions_mut().insert(form);
    Ok(req)
}

/// Percent-encodes `s` for a query value.
pub(super) fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Where to go back to after sign-in: a local path only (never another site).
pub(super) fn local_path(next: &str) -> &str {
    let ok = next.starts_with('/')
        && !next.starts_with("//")
        && !next.starts_with("/\\")
        && !next.chars().any(|c| c.is_control());
    if ok {
        next
    } else {
        "/"
    }
}

/// The portal's 404 for paths no route matches.
pub(super) async fn not_found(headers: HeaderMap) -> Response {
    let lang = Lang::of(&headers);
    PageError::new(
        StatusCode::NOT_FOUND,
        lang.t("没有这个页面。", "There is no such page."),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert_eq!(local_path("/catalogue?q=人口"), "/catalogue?q=人口");
        for bad in [
            "//evil.example/",
            "https://evil.example/",
            "/\\evil",
            "x",
            "",
        ] {
            assert_eq!(local_path(bad), "/", "{bad}");
        }
    }

    #[test]
    fn a_cross_site_post_is_refused() {
        let h = |pairs: &[(&str, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.insert(
                    axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            same_site(&m)
        };
        assert!(h(&[
            ("host", "127.0.0.1:7420"),
            ("origin", "http://127.0.0.1:7420")
        ]));
        assert!(!h(&[
            ("host", "127.0.0.1:7420"),
            ("origin", "http://evil.example")
        ]));
        assert!(!h(&[("host", "127.0.0.1:7420"), ("origin", "null")]));
        assert!(!h(&[
            ("host", "127.0.0.1:7420"),
            ("sec-fetch-site", "cross-site")
        ]));
        assert!(h(&[
            ("host", "127.0.0.1:7420"),
            ("sec-fetch-site", "same-origin")
        ]));
        assert!(h(&[("host", "127.0.0.1:7420")]));
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut m = HeaderMap::new();
        m.insert(
            header::COOKIE,
            "huitong_session_x=1; huitong_session=hts_abc; huitong_lang=en"
                .parse()
                .unwrap(),
        );
        assert_eq!(cookie(&m, SESSION_COOKIE), Some("hts_abc"));
        assert_eq!(cookie(&m, LANG_COOKIE), Some("en"));
        assert_eq!(cookie(&m, LOGIN_COOKIE), None);
    }
}
