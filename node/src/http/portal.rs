//! The sharing portal (共享门户): server-rendered pages for department staff, on the portal's
//! own loopback address (`portal.listen`), in the same process as the API.
//!
//! Every page is checked against [`PAGES`] before its handler runs ([`guard`]): a page without
//! a rule is refused, a page that needs a person sends a visitor without a session to the
//! sign-in page, and a role the page does not allow sees a refusal that says which role it
//! needs. Every POST carries the session's CSRF token (sign-in: a one-time cookie's) and is
//! refused from another site. Handlers call the same functions as the JSON API, so a page can
//! do exactly what the API allows the same person, and the signed entries name the person.
//!
//! Templates (`node/templates`) and assets are compiled into the binary (askama); nothing is
//! fetched from outside at run time.
//!
//! Layering: a child of `http` (its context, its handlers and its access rules); nothing below
//! names it.

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::Router;

use super::authz::Need;
use super::Ctx;
use crate::accounts::Role;

mod applications;
mod assets;
mod audit;
mod catalogue;
mod cataloguing;
mod collect;
mod entry_form;
mod form;
mod format;
mod guard;
mod notices;
mod page;
mod people;
mod pulls;
mod session;
mod statistics;
mod subscriptions;
mod upload;

pub(super) use guard::guard;

use Role::{Admin, Approver, Auditor, Cataloguer, DataUser};

/// Every page with what it needs: method, path as routed, need.
pub const PAGES: &[(&str, &str, Need)] = &[
    ("GET", "/login", Need::Public),
    ("POST", "/login", Need::Public),
    ("GET", "/lang", Need::Public),
    ("GET", "/assets/{file}", Need::Public),
    ("POST", "/logout", Need::SignedIn),
    ("GET", "/", Need::SignedIn),
    ("GET", "/catalogue", Need::SignedIn),
    ("GET", "/entry", Need::SignedIn),
    ("GET", "/notifications", Need::SignedIn),
    ("GET", "/me", Need::SignedIn),
    ("POST", "/me/password", Need::SignedIn),
    // The auditor reads who holds which role; only the administrator changes it.
    ("GET", "/people", Need::AnyOf(&[Admin, Auditor])),
    ("POST", "/people", Need::AnyOf(&[Admin])),
    ("GET", "/people/{account}", Need::AnyOf(&[Admin])),
    // roles, password, disable, enable.
    ("POST", "/people/{account}/{action}", Need::AnyOf(&[Admin])),
    // Counts only (no purposes, no persons): anyone signed in.
    ("GET", "/statistics", Need::SignedIn),
    ("GET", "/statistics/export", Need::SignedIn),
    ("GET", "/cataloguing", Need::AnyOf(&[Cataloguer])),
    ("GET", "/catalogue/new", Need::AnyOf(&[Cataloguer])),
    ("GET", "/catalogue/edit", Need::AnyOf(&[Cataloguer])),
    ("POST", "/catalogue/save", Need::AnyOf(&[Cataloguer])),
    ("POST", "/catalogue/withdraw", Need::AnyOf(&[Cataloguer])),
    ("GET", "/upload", Need::AnyOf(&[Cataloguer])),
    ("POST", "/upload", Need::AnyOf(&[Cataloguer])),
    ("GET", "/upload/report", Need::AnyOf(&[Cataloguer])),
    ("GET", "/apply", Need::AnyOf(&[DataUser])),
    ("POST", "/apply", Need::AnyOf(&[DataUser])),
    (
        "GET",
        "/applications",
        Need::AnyOf(&[DataUser, Approver, Auditor]),
    ),
    (
        "GET",
        "/applications/{id}",
        Need::AnyOf(&[DataUser, Approver, Auditor]),
    ),
    ("GET", "/inbox", Need::AnyOf(&[Approver])),
    (
        "POST",
        "/applications/{id}/approve",
        Need::AnyOf(&[Approver]),
    ),
    (
        "POST",
        "/applications/{id}/reject",
        Need::AnyOf(&[Approver]),
    ),
    (
        "POST",
        "/applications/{id}/revoke",
        Need::AnyOf(&[Approver]),
    ),
    ("GET", "/pulls", Need::AnyOf(&[DataUser])),
    ("POST", "/pulls", Need::AnyOf(&[DataUser])),
    ("GET", "/pulls/{id}", Need::AnyOf(&[DataUser])),
    ("GET", "/pulls/{id}/events", Need::AnyOf(&[DataUser])),
    ("GET", "/pulls/{id}/download", Need::AnyOf(&[DataUser])),
    // Collection: cataloguers start runs; they, the administrator and the auditor see the
    // sources and the history (as the API allows).
    (
        "GET",
        "/collect",
        Need::AnyOf(&[Cataloguer, Admin, Auditor]),
    ),
    ("POST", "/collect/run", Need::AnyOf(&[Cataloguer])),
    // Subscriptions: data users make and end their own; the administrator and the auditor see
    // every one.
    (
        "GET",
        "/subscriptions",
        Need::AnyOf(&[DataUser, Admin, Auditor]),
    ),
    ("POST", "/subscriptions", Need::AnyOf(&[DataUser])),
    (
        "POST",
        "/subscriptions/{name}/remove",
        Need::AnyOf(&[DataUser]),
    ),
    // The audit page: the security auditor's on every node. On the hub its operators (the
    // 系统管理员) read the log's status and the alarms too — read-only, and without the record
    // lookups and receipts, which stay the auditor's (三员分立: the administrator does not audit
    // what people did).
    (
        "GET",
        "/audit",
        Need::AnyOfOrOnHub {
            anywhere: &[Auditor],
            on_hub: &[Admin],
        },
    ),
    ("GET", "/audit/proof", Need::AnyOf(&[Auditor])),
];

/// The pages that take an upload (`multipart/form-data`, streamed to the handler, which checks
/// the CSRF token in its first part) instead of a form.
pub const UPLOADS: &[&str] = &["/upload"];

/// Adds the portal's headers to every answer that has none of its own (see
/// [`page::with_headers`]).
pub(super) async fn headers(r: axum::response::Response) -> axum::response::Response {
    if r.headers()
        .contains_key(axum::http::header::CONTENT_SECURITY_POLICY)
    {
        r
    } else {
        page::with_headers_keeping_cache(r)
    }
}

/// The rule for a method and routed page path.
pub fn rule(method: &axum::http::Method, path: &str) -> Option<Need> {
    PAGES
        .iter()
        .find(|(m, p, _)| *m == method.as_str() && *p == path)
        .map(|(_, _, need)| *need)
}

/// The portal's routes, each behind [`guard`].
pub(super) fn router(ctx: Ctx) -> Router {
    upload::remove_leftovers(&ctx.state);
    Router::new()
        .route("/login", get(session::login_page).post(session::login))
        .route("/logout", post(session::logout))
        .route("/lang", get(session::switch_lang))
        .route("/assets/{file}", get(assets::serve))
        .route("/", get(catalogue::home))
        .route("/catalogue", get(catalogue::search))
        .route("/entry", get(catalogue::entry))
        .route("/notifications", get(notices::page))
        .route("/me", get(people::me))
        .route("/me/password", post(people::change_password))
        .route("/people", get(people::list).post(people::create))
        .route("/people/{account}", get(people::person))
        .route("/people/{account}/{action}", post(people::change))
        .route("/statistics", get(statistics::page))
        .route("/statistics/export", get(statistics::download))
        .route("/cataloguing", get(cataloguing::list))
        .route("/catalogue/new", get(cataloguing::new_entry))
        .route("/catalogue/edit", get(cataloguing::edit_entry))
        .route("/catalogue/save", post(cataloguing::save))
        .route("/catalogue/withdraw", post(cataloguing::withdraw))
        .route(
            "/upload",
            get(upload::form)
                .post(upload::receive)
                .layer(DefaultBodyLimit::max(
                    usize::try_from(
                        ctx.state
                            .config
                            .portal
                            .max_upload_mib
                            .saturating_add(1)
                            .saturating_mul(1 << 20),
                    )
                    .unwrap_or(usize::MAX),
                )),
        )
        .route("/upload/report", get(upload::report))
        .route(
            "/apply",
            get(applications::apply_form).post(applications::apply),
        )
        .route("/applications", get(applications::mine))
        .route("/applications/{id}", get(applications::detail))
        .route("/inbox", get(applications::inbox))
        .route("/applications/{id}/approve", post(applications::approve))
        .route("/applications/{id}/reject", post(applications::reject))
        .route("/applications/{id}/revoke", post(applications::revoke))
        .route("/pulls", get(pulls::list).post(pulls::start))
        .route("/pulls/{id}", get(pulls::show_pull))
        .route("/pulls/{id}/events", get(pulls::events))
        .route("/pulls/{id}/download", get(pulls::download))
        .route("/collect", get(collect::page))
        .route("/collect/run", post(collect::run))
        .route(
            "/subscriptions",
            get(subscriptions::list).post(subscriptions::create),
        )
        .route("/subscriptions/{name}/remove", post(subscriptions::remove))
        .route("/audit", get(audit::page))
        .route("/audit/proof", get(audit::proof))
        .fallback(guard::not_found)
        .route_layer(axum::middleware::from_fn_with_state(ctx.clone(), guard))
        .with_state(ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_page_rule_is_unique() {
        let mut seen = std::collections::HashSet::new();
        for (m, p, _) in PAGES {
            assert!(seen.insert((m, p)), "{m} {p} twice");
            assert!(matches!(*m, "GET" | "POST"), "{m}");
        }
    }

    #[test]
    fn the_auditor_changes_nothing_and_the_administrator_neither_approves_nor_audits() {
        for (m, p, need) in PAGES {
            let roles = match need {
                Need::AnyOf(roles) => *roles,
                Need::AnyOfOrOnHub { anywhere, on_hub } => {
                    // Only reading, and only the hub's administrator besides the auditor.
                    assert_eq!(*m, "GET", "{p}");
                    assert_eq!(*on_hub, &[Admin][..], "{p}");
                    anywhere
                }
                _ => continue,
            };
            if *m == "POST" {
                assert!(!roles.contains(&Auditor), "the auditor may {m} {p}");
            }
            assert!(!roles.contains(&Admin) || !p.contains("approve"));
        }
    }
}
