//! The service gateway (接口共享) on the API's address: a department's own systems call other
//! departments' services through this node, never directly.
//!
//! - `GET /svc/{provider}/{class}/{number}/lookup?key=…&value=…&fields=a,b&limit=10`: the rows
//!   of resource `{class}/{number}` of provider `{provider}` (USCC) whose 信息项 `key` equals
//!   `value`, their `fields`; `filter=信息项<op>value` (repeatable; `= != < <= > >= ^=`) keeps
//!   only the rows that meet it, `offset=N` skips the first N (paging, with `more`);
//! - `POST /svc/{provider}/{class}/{number}/verify` with a JSON object of 信息项 → value: 核验,
//!   `{"match": true|false}` only;
//! - `ANY /svc/{provider}/{class}/{number}/call/{path…}`: an operation of a proxied service,
//!   answered as its backend answered (see [`proxied`]).
//!
//! A caller authenticates with its own client key (`Authorization: Bearer hgw_…`, from
//! `huitong gateway add-client`), checked on every call against `gateway-clients`; the node's
//! admin token and people's sessions are not accepted here. Answers carry the provider's signed
//! answer (`answer`, base64), the caller's proof of what it was told; refusals the provider
//! signed carry it too, with the call's `id`, beside `error`.

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use base64::Engine as _;
use huitong_protocol::call::{Filter, Outcome, Query as CallQuery, MAX_HTTP_BODY, MAX_ROWS};
use huitong_protocol::wire::RefusalKind;
use serde::Serialize;

use super::{fail, Ctx, Fail};
use crate::service::clients;
use crate::service::consumer::{self, CallError, Called};

/// Largest request body the gateway reads (a 核验's record, a proxied call's body).
const MAX_GATEWAY_BODY: usize = 64 * 1024;
/// The longest a request may take, its body and the call included.
const REQUEST_TIME: std::time::Duration = std::time::Duration::from_secs(30);

/// The calling system, from its client key (checked before anything else of the request).
#[derive(Clone)]
pub(super) struct Client(String);

/// Checks the client key before the request's body is read or anything is answered.
async fn guard(
    State(ctx): State<Ctx>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match client(&ctx, req.headers()) {
        Ok(name) => {
            req.extensions_mut().insert(Client(name));
            next.run(req).await
        }
        Err(f) => f.into_response(),
    }
}

/// The gateway's routes (on the admin API's address, and on `[gateway] listen` if set): the
/// client key checked first, bodies of at most [`MAX_GATEWAY_BODY`], [`REQUEST_TIME`] for all.
pub(super) fn routes(ctx: &Ctx) -> axum::Router<Ctx> {
    use axum::routing::{any, get, post};
    axum::Router::new()
        .route("/svc/{provider}/{class}/{number}/lookup", get(lookup))
        .route("/svc/{provider}/{class}/{number}/verify", post(verify))
        .route(
            "/svc/{provider}/{class}/{number}/call/{*path}",
            any(proxied),
        )
        .route_layer(axum::middleware::from_fn_with_state(ctx.clone(), guard))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_GATEWAY_BODY))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            REQUEST_TIME,
        ))
}

/// Rows a lookup returns when it does not say.
const DEFAULT_LIMIT: u32 = 10;

/// A call's answer.
#[derive(Debug, Serialize)]
struct Answered {
    /// The call's id (the same in both nodes' call logs).
    id: String,
    /// The dataset version answered from.
    version: u64,
    /// The grant it was answered under.
    grant: Option<String>,
    /// A lookup's 信息项.
    #[serde(skip_serializing_if = "Option::is_none")]
    fields: Option<Vec<String>>,
    /// A lookup's rows (信息项 → value; `null`: empty).
    #[serde(skip_serializing_if = "Option::is_none")]
    rows: Option<Vec<serde_json::Map<String, serde_json::Value>>>,
    /// More rows matched than `limit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    more: Option<bool>,
    /// A 核验's answer.
    #[serde(rename = "match", skip_serializing_if = "Option::is_none")]
    matched: Option<bool>,
    /// The provider's signed answer (base64 of the envelope).
    answer: String,
}

/// The calling system's name, from its client key.
fn client(ctx: &Ctx, headers: &HeaderMap) -> Result<String, Fail> {
    let key = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or_default();
    let unknown = || {
        fail(
            StatusCode::UNAUTHORIZED,
            "no valid gateway client key: send `Authorization: Bearer hgw_…` with the key `huitong gateway add-client NAME` printed for this system",
        )
    };
    if key.is_empty() {
        return Err(unknown());
    }
    match clients::client_of(&ctx.state.dir, key) {
        Ok(Some(name)) => Ok(name),
        Ok(None) => Err(unknown()),
        Err(e) => {
            tracing::error!(error = %e, "the gateway cannot read its client list");
            Err(fail(
                StatusCode::INTERNAL_SERVER_ERROR,
                "the gateway cannot read its client list; the node's operator must check gateway-clients (see the node's log)",
            ))
        }
    }
}

/// A call refused, with the provider's signed refusal.
#[derive(Debug, Serialize)]
struct Refused {
    /// What was wrong and what to do.
    error: String,
    /// The call's id (both nodes' call logs).
    id: String,
    /// The provider's signed refusal (base64 of the envelope).
    answer: String,
}

/// The error as JSON: with the call's id and the provider's signed refusal when it signed one.
fn refused(e: &CallError) -> Response {
    let status = status_of(e);
    match e {
        CallError::Refused {
            signed: Some(s), ..
        }
        | CallError::Throttled {
            signed: Some(s), ..
        } => (
            status,
            Json(Refused {
                error: e.to_string(),
                id: s.id.clone(),
                answer: base64::engine::general_purpose::STANDARD.encode(&s.envelope),
            }),
        )
            .into_response(),
        _ => fail(status, e).into_response(),
    }
}

fn status_of(e: &CallError) -> StatusCode {
    match e {
        CallError::Invalid(_) => StatusCode::BAD_REQUEST,
        CallError::NotFound(_) => StatusCode::NOT_FOUND,
        CallError::Refused { kind, .. } => match kind {
            RefusalKind::NeedsGrant | RefusalKind::NotShared => StatusCode::FORBIDDEN,
            RefusalKind::NotFound => StatusCode::NOT_FOUND,
            RefusalKind::Withdrawn => StatusCode::GONE,
            RefusalKind::Invalid => StatusCode::BAD_REQUEST,
            RefusalKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        },
        CallError::Throttled { .. } => StatusCode::TOO_MANY_REQUESTS,
        CallError::Unreachable(_) | CallError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
        CallError::BadAnswer(_) => StatusCode::BAD_GATEWAY,
        CallError::Local(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Makes the call; the answer as `respond` makes it, or the error as JSON.
async fn call_with(
    ctx: &Ctx,
    client: String,
    (provider, class, number): (String, String, String),
    query: CallQuery,
    respond: impl FnOnce(Called) -> Response,
) -> Response {
    let code = format!("{class}/{number}");
    let to = consumer::Target {
        provider: &provider,
        code: &code,
    };
    match consumer::call(
        &ctx.state,
        (&ctx.transport, ctx.outbound.as_ref()),
        &ctx.services,
        to,
        query,
        &client,
    )
    .await
    {
        Ok(called) => respond(called),
        Err(e) => {
            let mut r = refused(&e);
            if let CallError::Throttled { retry_after, .. } = &e {
                // Whole seconds, rounded up (RFC 9110).
                let secs = retry_after.as_millis().div_ceil(1000).max(1);
                if let Ok(v) = axum::http::HeaderValue::from_str(&secs.to_string()) {
                    r.headers_mut().insert(axum::http::header::RETRY_AFTER, v);
                }
            }
            r
        }
    }
}

async fn run(
    ctx: &Ctx,
    client: String,
    at: (String, String, String),
    query: CallQuery,
) -> Response {
    call_with(ctx, client, at, query, |called| {
        Json(answered(called)).into_response()
    })
    .await
}

fn answered(c: Called) -> Answered {
    let a = c.answer;
    let mut out = Answered {
        id: a.id,
        version: a.version,
        grant: a.grant,
        fields: None,
        rows: None,
        more: None,
        matched: None,
        answer: base64::engine::general_purpose::STANDARD.encode(&c.envelope),
    };
    match a.outcome {
        Outcome::Rows { fields, rows, more } => {
            out.rows = Some(
                rows.into_iter()
                    .map(|r| {
                        fields
                            .iter()
                            .cloned()
                            .zip(
                                r.into_iter()
                                    .map(|v| v.map_or(serde_json::Value::Null, Into::into)),
                            )
                            .collect()
                    })
                    .collect(),
            );
            out.fields = Some(fields);
            out.more = Some(more);
        }
        Outcome::Match(m) => out.matched = Some(m),
        // Answered by `proxied`, never as JSON here; refusals are errors (`refused`).
        Outcome::Http { .. } | Outcome::Refused { .. } | Outcome::Throttled { .. } => {}
    }
    out
}

/// How a lookup is asked.
const LOOKUP_USAGE: &str =
    "a lookup takes ?key=信息项&value=…&fields=a,b[&limit=N][&offset=N][&filter=信息项>=value …]";

/// A lookup's query string: `key`, `value`, `fields` (comma-separated), `limit`, `offset`, and
/// any number of `filter=信息项<op>value`.
fn lookup_query(raw: &str) -> Result<CallQuery, String> {
    let (mut key, mut value, mut fields, mut limit, mut offset) = (None, None, None, None, None);
    let mut filters = Vec::new();
    let number = |name: &str, v: &str| {
        v.trim()
            .parse::<u32>()
            .map_err(|_| format!("{name} must be a whole number, not {v:?}"))
    };
    // Decoding replaces bytes that are not UTF-8 with U+FFFD: refuse rather than look up
    // something else than was sent.
    let replaced = "%EF%BF%BD";
    if form_urlencoded::parse(raw.as_bytes())
        .any(|(k, v)| k.contains('\u{FFFD}') || v.contains('\u{FFFD}'))
        && !raw.to_ascii_uppercase().contains(replaced)
    {
        return Err("the query string is not UTF-8 once percent-decoded".into());
    }
    for (k, v) in form_urlencoded::parse(raw.as_bytes()) {
        let once = |slot: &mut Option<String>| match slot.replace(v.to_string()) {
            Some(_) => Err(format!("{k} is given twice")),
            None => Ok(()),
        };
        match k.as_ref() {
            "key" => once(&mut key)?,
            "value" => once(&mut value)?,
            "fields" => once(&mut fields)?,
            "limit" if limit.is_none() => limit = Some(number("limit", &v)?),
            "offset" if offset.is_none() => offset = Some(number("offset", &v)?),
            "limit" | "offset" => return Err(format!("{k} is given twice")),
            "filter" => filters.push(Filter::parse(&v).map_err(|e| e.to_string())?),
            other => return Err(format!("unknown parameter {other:?}")),
        }
    }
    let missing = |name: &str| format!("{name} is missing");
    let fields: Vec<String> = fields
        .ok_or_else(|| missing("fields"))?
        .split([',', '，'])
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(str::to_string)
        .collect();
    Ok(CallQuery::Lookup {
        key: key.ok_or_else(|| missing("key"))?.trim().to_string(),
        value: value.ok_or_else(|| missing("value"))?,
        fields,
        limit: limit.unwrap_or(DEFAULT_LIMIT).min(MAX_ROWS),
        filters,
        offset: offset.unwrap_or(0),
    })
}

/// `GET /svc/{provider}/{class}/{number}/lookup`.
pub(super) async fn lookup(
    State(ctx): State<Ctx>,
    Extension(Client(client)): Extension<Client>,
    Path(at): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
) -> Response {
    match lookup_query(raw.as_deref().unwrap_or_default()) {
        Ok(query) => run(&ctx, client, at, query).await,
        Err(e) => fail(StatusCode::BAD_REQUEST, format!("{LOOKUP_USAGE}: {e}")).into_response(),
    }
}

/// `POST /svc/{provider}/{class}/{number}/verify`.
pub(super) async fn verify(
    State(ctx): State<Ctx>,
    Extension(Client(client)): Extension<Client>,
    Path(at): Path<(String, String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let record: serde_json::Map<String, serde_json::Value> = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return fail(
                StatusCode::BAD_REQUEST,
                format!("the body must be a JSON object of 信息项 → value, e.g. {{\"姓名\": \"张三\", \"身份证号\": \"…\"}}: {e}"),
            )
            .into_response()
        }
    };
    let mut pairs = Vec::with_capacity(record.len());
    for (k, v) in record {
        match v {
            serde_json::Value::String(s) => pairs.push((k, s)),
            // Numbers are refused, not rewritten (a long ID number would lose digits).
            other => {
                return fail(
                    StatusCode::BAD_REQUEST,
                    format!("the value of {k:?} must be text in quotes, not {other}"),
                )
                .into_response()
            }
        }
    }
    run(&ctx, client, at, CallQuery::Verify { record: pairs }).await
}

/// `ANY /svc/{provider}/{class}/{number}/call/{path…}`: a proxied service's operation. The
/// backend's status, media type and body come back as it gave them, with the call's id
/// (`X-Huitong-Call`) and the dataset version of the service's description
/// (`X-Huitong-Version`); the provider's signed answer is kept in this node's call log
/// (`huitong audit calls`, `audit verify --record ID`).
pub(super) async fn proxied(
    State(ctx): State<Ctx>,
    method: axum::http::Method,
    Extension(Client(client)): Extension<Client>,
    headers: HeaderMap,
    Path((provider, class, number, _)): Path<(String, String, String, String)>,
    uri: axum::http::Uri,
    body: axum::body::Bytes,
) -> Response {
    if body.len() > MAX_HTTP_BODY {
        return fail(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "the request body is {} bytes; a proxied call forwards at most {MAX_HTTP_BODY}",
                body.len()
            ),
        )
        .into_response();
    }
    // The path as sent (still percent-encoded), after `/call`.
    let prefix = format!("/svc/{provider}/{class}/{number}/call");
    let raw = uri.path();
    let path = raw
        .strip_prefix(prefix.as_str())
        .or_else(|| {
            // The path parameters were percent-decoded: find `/call/` in the raw path instead.
            raw.find("/call/").map(|at| &raw[at + "/call".len()..])
        })
        .unwrap_or("/")
        .to_string();
    let content_type = match headers.get(axum::http::header::CONTENT_TYPE) {
        None => None,
        Some(v) => match v.to_str() {
            Ok(t) => Some(t.to_string()),
            Err(_) => {
                return fail(
                    StatusCode::BAD_REQUEST,
                    "the Content-Type must be printable ASCII",
                )
                .into_response()
            }
        },
    };
    let query = CallQuery::Http {
        method: method.as_str().to_string(),
        path,
        query: uri.query().unwrap_or_default().to_string(),
        content_type,
        body: body.to_vec(),
    };
    if let Err(e) = query.check() {
        return fail(StatusCode::BAD_REQUEST, e).into_response();
    }
    call_with(&ctx, client, (provider, class, number), query, |called| {
        let a = called.answer;
        let Outcome::Http {
            status,
            content_type,
            body,
        } = a.outcome
        else {
            return fail(
                StatusCode::BAD_GATEWAY,
                "the provider answered another kind of call",
            )
            .into_response();
        };
        let mut r = (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            body,
        )
            .into_response();
        let h = r.headers_mut();
        let mut set = |name: &'static str, value: &str| {
            if let Ok(v) = axum::http::HeaderValue::from_str(value) {
                h.insert(name, v);
            }
        };
        set("x-huitong-call", &a.id);
        // The provider's backend chose the media type: the caller's browser, if any, must not
        // guess another.
        set("x-content-type-options", "nosniff");
        // The backend's answer is data, never a page of this origin.
        set("content-security-policy", "sandbox; default-src 'none'");
        set("x-huitong-version", &a.version.to_string());
        if let Some(g) = &a.grant {
            set("x-huitong-grant", g);
        }
        if let Some(t) = &content_type {
            set("content-type", t);
        }
        r
    })
    .await
}
