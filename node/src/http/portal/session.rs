//! Signing in and out of the portal, and the language switch.
//!
//! The sign-in form carries a one-time token that is also set as a cookie (there is no session
//! yet to hold a CSRF token), so another site cannot sign a browser in to an account of its
//! choosing. Sign-in always starts a new session with a new token and ends any session the
//! browser came with (no session fixation); the session cookie is `HttpOnly` and
//! `SameSite=Strict` (a page of another site cannot make a signed-in request, not even a
//! navigation that reads the audit page). Failed sign-ins are slowed exactly as on the API (the same throttle).

use std::net::SocketAddr;

use askama::Template;
use axum::extract::{ConnectInfo, Query, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use serde::Deserialize;

use super::form::Form;
use super::guard::{self, Viewer, LANG_COOKIE, LOGIN_COOKIE, SESSION_COOKIE};
use super::page::{html, Lang};
use crate::http::authz::Principal;
use crate::http::people::sign_in;
use crate::http::Ctx;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    lang: Lang,
    node: &'a str,
    csrf: &'a str,
    next: &'a str,
    account: &'a str,
    error: Option<String>,
    switch_href: String,
}

#[derive(Deserialize)]
pub(crate) struct Next {
    #[serde(default)]
    next: String,
}

/// Sets a portal cookie: HttpOnly, SameSite=Strict, and Secure when the portal serves HTTPS.
fn set_cookie(r: &mut Response, ctx: &Ctx, name: &str, value: &str, max_age: Option<u64>) {
    let age = max_age.map_or(String::new(), |s| format!("; Max-Age={s}"));
    let secure = if ctx.state.config.portal.tls_cert.is_some() {
        "; Secure"
    } else {
        ""
    };
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict{secure}{age}"
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
}

fn login_form(
    ctx: &Ctx,
    headers: &HeaderMap,
    lang: Lang,
    next: &str,
    account: &str,
    error: Option<String>,
) -> Response {
    let nonce = hex::encode(rand::random::<[u8; 16]>());
    let path = format!("/login?next={}", guard::encode(next));
    let to = if lang.en() { "zh" } else { "en" };
    let page = LoginPage {
        lang,
        node: &ctx.state.config.node.name,
        csrf: &nonce,
        next,
        account,
        error,
        switch_href: format!("/lang?to={to}&next={}", guard::encode(&path)),
    };
    let mut r = html(&page);
    set_cookie(
        &mut r,
        ctx,
        &guard::scoped(headers, LOGIN_COOKIE),
        &nonce,
        Some(3600),
    );
    r
}

pub(crate) async fn login_page(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<Next>,
) -> Response {
    let next = guard::local_path(&q.next);
    if viewer.account().is_some() {
        return Redirect::to(next).into_response();
    }
    login_form(&ctx, &headers, viewer.lang, next, "", None)
}

pub(crate) async fn login(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Extension(viewer): Extension<Viewer>,
    Extension(form): Extension<Form>,
) -> Response {
    let lang = viewer.lang;
    let next = guard::local_path(form.get("next")).to_string();
    let account = form.get("account").to_string();
    let principal = match sign_in(&ctx, from, &account, form.get("password").to_string()).await {
        Ok(p) => p,
        Err(e) => {
            let mut r = login_form(&ctx, &headers, lang, &next, &account, Some(e.message()));
            *r.status_mut() = match e {
                crate::http::people::SignInError::TooMany(_) => {
                    axum::http::StatusCode::TOO_MANY_REQUESTS
                }
                _ => axum::http::StatusCode::UNAUTHORIZED,
            };
            return r;
        }
    };
    // The session the browser came with (if any) ends: a token planted before sign-in never
    // becomes a signed-in one.
    if let Some(Principal::Person { token, .. }) = &viewer.principal {
        ctx.people.sessions.end(token);
    }
    let Principal::Person { token, .. } = principal else {
        return super::page::PageError::internal("sign-in made no person").into_response();
    };
    let mut r = Redirect::to(&next).into_response();
    set_cookie(
        &mut r,
        &ctx,
        &guard::scoped(&headers, SESSION_COOKIE),
        &token,
        None,
    );
    set_cookie(
        &mut r,
        &ctx,
        &guard::scoped(&headers, LOGIN_COOKIE),
        "",
        Some(0),
    );
    r
}

pub(crate) async fn logout(
    State(ctx): State<Ctx>,
    headers: HeaderMap,
    Extension(viewer): Extension<Viewer>,
) -> Response {
    if let Some(Principal::Person { token, account, .. }) = &viewer.principal {
        ctx.people.sessions.end(token);
        tracing::info!(target: "huitong::audit", account = %account.name, "signed out of the portal");
    }
    let mut r = Redirect::to("/login").into_response();
    set_cookie(
        &mut r,
        &ctx,
        &guard::scoped(&headers, SESSION_COOKIE),
        "",
        Some(0),
    );
    r
}

#[derive(Deserialize)]
pub(crate) struct Switch {
    to: String,
    #[serde(default)]
    next: String,
}

pub(crate) async fn switch_lang(Query(q): Query<Switch>) -> Response {
    let lang = if q.to == "en" { "en" } else { "zh" };
    let mut r = Redirect::to(guard::local_path(&q.next)).into_response();
    if let Ok(v) = HeaderValue::from_str(&format!(
        "{LANG_COOKIE}={lang}; Path=/; SameSite=Lax; Max-Age=31536000"
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}
