//! Who may call which route: every request's bearer token is resolved to a [`Principal`] — the
//! node's admin token (`api.token`, every right: the CLI on the node's own machine) or a
//! signed-in person's session — and checked against [`RULES`] for the route it matched.
//!
//! Fails closed: a route without a rule is refused to every person (only the admin token
//! passes), a missing, unknown or expired token is refused, and a disabled account's sessions
//! are refused even before they expire. Roles are read from the account on every request, so a
//! change of roles takes effect at once.

use axum::extract::{MatchedPath, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use huitong_protocol::Actor;

use super::{fail, Ctx};
use crate::accounts::{Account, Role};

/// Who a request acts for.
#[derive(Clone, Debug)]
pub(crate) enum Principal {
    /// The node's admin token.
    Node,
    /// A signed-in person, with the session's bearer token.
    Person {
        /// The account as read for this request.
        account: Account,
        /// The session's token (to end it at sign-out).
        token: String,
        /// The session's CSRF token (the portal's forms echo it).
        csrf: String,
    },
}

impl Principal {
    /// The signed-in person's account name (`None` for the node).
    pub(crate) fn account(&self) -> Option<&str> {
        match self {
            Principal::Node => None,
            Principal::Person { account, .. } => Some(&account.name),
        }
    }

    /// The person to name in the feed entries this request appends (`None` for the node).
    pub(crate) fn actor(&self) -> Option<Actor> {
        match self {
            Principal::Node => None,
            Principal::Person { account, .. } => Some(account.actor()),
        }
    }
}

/// What a route needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Nothing: anyone who reaches the API (sign-in).
    Public,
    /// Any signed-in person.
    SignedIn,
    /// A person holding one of these roles.
    AnyOf(&'static [Role]),
    /// A person holding one of `anywhere`, or — on the hub's node only — one of `on_hub` (the
    /// hub's operators read the federation's audit status; see the audit page).
    AnyOfOrOnHub {
        /// Roles that pass on every node.
        anywhere: &'static [Role],
        /// Roles that pass on the hub's node.
        on_hub: &'static [Role],
    },
}

use Role::{Admin, Approver, Auditor, Cataloguer, DataUser};

/// Every route of `/api/v1` with what it needs: method, path as routed, need. The admin token
/// passes every rule.
pub const RULES: &[(&str, &str, Need)] = &[
    ("POST", "/api/v1/login", Need::Public),
    ("POST", "/api/v1/logout", Need::SignedIn),
    ("GET", "/api/v1/me", Need::SignedIn),
    ("POST", "/api/v1/me/password", Need::SignedIn),
    // The auditor checks who holds which role (the administrator's work) without changing it.
    ("GET", "/api/v1/users", Need::AnyOf(&[Admin, Auditor])),
    ("POST", "/api/v1/users", Need::AnyOf(&[Admin])),
    (
        "POST",
        "/api/v1/users/{account}/roles",
        Need::AnyOf(&[Admin]),
    ),
    (
        "POST",
        "/api/v1/users/{account}/password",
        Need::AnyOf(&[Admin]),
    ),
    (
        "POST",
        "/api/v1/users/{account}/disable",
        Need::AnyOf(&[Admin]),
    ),
    (
        "POST",
        "/api/v1/users/{account}/enable",
        Need::AnyOf(&[Admin]),
    ),
    ("GET", "/api/v1/status", Need::SignedIn),
    // Probes for monitoring: counts only, on the API's (loopback by default) address.
    ("GET", "/api/v1/healthz", Need::Public),
    ("GET", "/api/v1/metrics", Need::Public),
    // The API's description (no data).
    ("GET", "/api/v1/openapi.json", Need::Public),
    ("GET", "/api/v1/peers", Need::SignedIn),
    ("GET", "/api/v1/catalogue", Need::SignedIn),
    ("POST", "/api/v1/catalogue", Need::AnyOf(&[Cataloguer])),
    (
        "POST",
        "/api/v1/catalogue/batch",
        Need::AnyOf(&[Cataloguer]),
    ),
    (
        "POST",
        "/api/v1/catalogue/withdraw",
        Need::AnyOf(&[Cataloguer]),
    ),
    ("GET", "/api/v1/charter", Need::SignedIn),
    ("POST", "/api/v1/charter", Need::AnyOf(&[Admin])),
    ("POST", "/api/v1/datasets", Need::AnyOf(&[Cataloguer])),
    ("GET", "/api/v1/datasets/versions", Need::SignedIn),
    ("GET", "/api/v1/pulls", Need::AnyOf(&[DataUser])),
    ("POST", "/api/v1/pulls", Need::AnyOf(&[DataUser])),
    ("GET", "/api/v1/pulls/{id}", Need::AnyOf(&[DataUser])),
    (
        "POST",
        "/api/v1/pulls/{id}/cancel",
        Need::AnyOf(&[DataUser]),
    ),
    ("POST", "/api/v1/gc", Need::AnyOf(&[Admin])),
    // Collection from the department's databases: run by cataloguers (it publishes versions);
    // its history and sources (database hosts and users, never passwords) for them, the
    // administrator and the auditor.
    ("POST", "/api/v1/collect/run", Need::AnyOf(&[Cataloguer])),
    // Subscriptions pull data: data users make and end them; the administrator and the auditor
    // see them too.
    (
        "GET",
        "/api/v1/subscriptions",
        Need::AnyOf(&[DataUser, Admin, Auditor]),
    ),
    ("POST", "/api/v1/subscriptions", Need::AnyOf(&[DataUser])),
    (
        "POST",
        "/api/v1/subscriptions/{name}/remove",
        Need::AnyOf(&[DataUser]),
    ),
    (
        "GET",
        "/api/v1/collect/runs",
        Need::AnyOf(&[Cataloguer, Admin, Auditor]),
    ),
    (
        "GET",
        "/api/v1/collect/sources",
        Need::AnyOf(&[Cataloguer, Admin, Auditor]),
    ),
    ("POST", "/api/v1/backup", Need::AnyOf(&[Admin])),
    (
        "GET",
        "/api/v1/applications",
        Need::AnyOf(&[DataUser, Approver, Auditor]),
    ),
    ("POST", "/api/v1/applications", Need::AnyOf(&[DataUser])),
    (
        "POST",
        "/api/v1/applications/{id}/approve",
        Need::AnyOf(&[Approver]),
    ),
    (
        "POST",
        "/api/v1/applications/{id}/reject",
        Need::AnyOf(&[Approver]),
    ),
    (
        "POST",
        "/api/v1/applications/{id}/revoke",
        Need::AnyOf(&[Approver]),
    ),
    ("GET", "/api/v1/audit", Need::AnyOf(&[Auditor])),
    ("GET", "/api/v1/audit/records/{id}", Need::AnyOf(&[Auditor])),
    (
        "GET",
        "/api/v1/audit/records/{id}/proof",
        Need::AnyOf(&[Auditor]),
    ),
    // Checking a proof and importing a checkpoint add evidence only; they change no data.
    ("POST", "/api/v1/audit/proofs", Need::AnyOf(&[Auditor])),
    ("POST", "/api/v1/audit/checkpoints", Need::AnyOf(&[Auditor])),
    ("GET", "/api/v1/audit/receipts", Need::AnyOf(&[Auditor])),
    ("GET", "/api/v1/audit/transfers", Need::AnyOf(&[Auditor])),
    ("GET", "/api/v1/audit/calls", Need::AnyOf(&[Auditor])),
    ("GET", "/api/v1/audit/calls/stats", Need::AnyOf(&[Auditor])),
];

/// The rule for a method and routed path.
pub fn rule(method: &Method, path: &str) -> Option<Need> {
    RULES
        .iter()
        .find(|(m, p, _)| *m == method.as_str() && *p == path)
        .map(|(_, _, need)| *need)
}

/// Whether `account` meets `need` on a node that is (`on_hub`) or is not the hub (the admin
/// token meets every need).
pub fn allows(need: Need, account: &Account, on_hub: bool) -> bool {
    let holds = |roles: &[Role]| roles.iter().any(|&r| account.has(r));
    match need {
        Need::Public | Need::SignedIn => true,
        Need::AnyOf(roles) => holds(roles),
        Need::AnyOfOrOnHub {
            anywhere,
            on_hub: hub_roles,
        } => holds(anywhere) || (on_hub && holds(hub_roles)),
    }
}

/// Whether the request's Host names this machine (a DNS-rebinding page names another host,
/// which then resolves to 127.0.0.1). A request without a Host (HTTP/1.0) passes.
pub(super) fn host_is_loopback(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(axum::http::header::HOST) else {
        return true;
    };
    let Ok(host) = host.to_str() else {
        return false;
    };
    let name = if let Some(v6) = host.strip_prefix('[') {
        v6.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(h, _)| h)
    };
    matches!(name, "localhost" | "::1")
        || name
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The bearer token of a request ("" when there is none).
pub(super) fn bearer(headers: &HeaderMap) -> &str {
    headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
}

const NO_TOKEN: &str = "missing, wrong or expired bearer token: sign in with POST /api/v1/login (a person), or use the node's admin token (the CLI reads it from api.token in the node directory)";

/// The middleware: resolves the principal, checks the route's rule, and hands the principal to
/// the handler as a request extension.
pub(super) async fn guard(
    State(ctx): State<Ctx>,
    matched: Option<MatchedPath>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    // A browser on the node's own host may be steered by a DNS-rebinding page: a request from
    // loopback (or to a loopback-bound API) must name a loopback host.
    let from_loopback = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .is_some_and(|c| c.0.ip().is_loopback());
    if (ctx.bound.ip().is_loopback() || from_loopback) && !host_is_loopback(req.headers()) {
        return fail(
            StatusCode::MISDIRECTED_REQUEST,
            "this node's API answers requests addressed to a loopback name only (Host: 127.0.0.1, localhost or [::1]); a web page naming another host is refused",
        )
        .into_response();
    }
    let need = matched
        .as_ref()
        .and_then(|p| rule(req.method(), p.as_str()));
    if need == Some(Need::Public) {
        return next.run(req).await;
    }
    let token = bearer(req.headers()).to_string();
    let principal = if !token.is_empty() && constant_time_eq(token.as_bytes(), ctx.token.as_bytes())
    {
        Principal::Node
    } else {
        match person(&ctx, &token).await {
            Ok(Some(p)) => p,
            Ok(None) => return fail(StatusCode::UNAUTHORIZED, NO_TOKEN).into_response(),
            Err(f) => return f.into_response(),
        }
    };
    if let Principal::Person { account, .. } = &principal {
        let Some(need) = need else {
            return fail(
                StatusCode::FORBIDDEN,
                "this route has no access rule for people; only the node's admin token may call it",
            )
            .into_response();
        };
        if !allows(need, account, ctx.state.is_hub()) {
            return fail(StatusCode::FORBIDDEN, refusal(need, account)).into_response();
        }
    }
    req.extensions_mut().insert(principal);
    next.run(req).await
}

/// The signed-in person of a session token, if it is live and the account enabled.
pub(super) async fn person(ctx: &Ctx, token: &str) -> Result<Option<Principal>, super::Fail> {
    let Some(session) = ctx.people.sessions.resolve(token) else {
        return Ok(None);
    };
    let accounts = ctx.people.accounts.clone();
    let name = session.account.clone();
    let account = tokio::task::spawn_blocking(move || accounts.get(&name))
        .await
        .map_err(super::internal)?
        .map_err(super::internal)?;
    match account {
        Some(account)
            if !account.disabled && account.password_set_ms == session.password_set_ms =>
        {
            Ok(Some(Principal::Person {
                account,
                token: token.to_string(),
                csrf: session.csrf,
            }))
        }
        _ => {
            ctx.people.sessions.end(token);
            Ok(None)
        }
    }
}

pub(super) fn refusal(need: Need, account: &Account) -> String {
    let roles = |rs: &[Role]| {
        rs.iter()
            .map(|r| format!("{} ({})", r.label(), r.as_str()))
            .collect::<Vec<_>>()
            .join(" or ")
    };
    let needed = match need {
        Need::AnyOf(needed)
        | Need::AnyOfOrOnHub {
            anywhere: needed, ..
        } => needed,
        _ => return format!("{} may not do this", account.name),
    };
    format!(
        "{} may not do this: it needs the role {}; the account holds {} (an administrator changes roles with `huitong user roles`)",
        account.name,
        roles(needed),
        if account.roles.is_empty() {
            "none".to_string()
        } else {
            roles(&account.roles).replace(" or ", ", ")
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_hosts_pass() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(axum::http::header::HOST, v.parse().unwrap());
            host_is_loopback(&m)
        };
        for ok in [
            "127.0.0.1:8080",
            "127.0.0.1",
            "localhost:1",
            "[::1]:9",
            "127.1.2.3:5",
        ] {
            assert!(h(ok), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "10.0.0.1:80",
            "localhost.evil.example",
            "[::2]:1",
        ] {
            assert!(!h(bad), "{bad}");
        }
        assert!(host_is_loopback(&HeaderMap::new()));
    }

    #[test]
    fn every_rule_is_unique_and_well_formed() {
        let mut seen = std::collections::HashSet::new();
        for (m, p, _) in RULES {
            assert!(seen.insert((m, p)), "{m} {p} twice");
            assert!(p.starts_with("/api/v1/"), "{p}");
            assert!(matches!(*m, "GET" | "POST"), "{m}");
        }
    }

    #[test]
    fn the_administrator_cannot_approve_or_audit_and_the_auditor_changes_nothing() {
        let account = |roles: Vec<Role>| Account {
            name: "x".into(),
            display_name: "x".into(),
            roles,
            password: String::new(),
            disabled: false,
            created_ms: 0,
            password_set_ms: 0,
            notices_seen_ms: 0,
        };
        let admin = account(vec![Admin]);
        let auditor = account(vec![Auditor]);
        for (m, p, need) in RULES {
            let changes = *m == "POST"
                && !matches!(*p, "/api/v1/audit/proofs" | "/api/v1/audit/checkpoints")
                && !matches!(need, Need::Public | Need::SignedIn);
            if changes {
                assert!(!allows(*need, &auditor, true), "the auditor may {m} {p}");
            }
            if p.starts_with("/api/v1/audit") || p.contains("approve") || p.contains("reject") {
                assert!(
                    !allows(*need, &admin, true),
                    "the administrator may {m} {p}"
                );
            }
        }
    }
}
