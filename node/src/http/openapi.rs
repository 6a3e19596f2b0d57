//! The OpenAPI 3.1 document of `/api/v1` (`GET /api/v1/openapi.json`): one operation for every
//! route of the access table [`authz::RULES`] (the table every request is checked against, so
//! the document lists exactly the routes that answer), each with the role it needs, its path
//! parameters, and its request and answer bodies as schemas derived from the API's Rust types
//! ([`crate::api`], utoipa). Bodies whose types live outside the API module (a pull's progress,
//! a publish report, the audit log's reports, a raw catalogue entry) are documented as JSON
//! objects naming their Rust type.

use std::sync::OnceLock;

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use utoipa::openapi::path::{HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, Paths};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Ref, RefOr, Required,
    ResponseBuilder, Schema,
};

use super::authz::{self, Need};
use crate::api::{self, accounts};

/// A body: a schema derived from an API type (by its name), a list of one, a JSON object of
/// another Rust type, plain text, or nothing.
#[derive(Clone, Copy, Debug)]
pub enum Body {
    /// No body.
    None,
    /// The derived schema of this API type.
    Schema(&'static str),
    /// A list of that schema.
    List(&'static str),
    /// A JSON object of this (non-API) Rust type.
    Object(&'static str),
    /// A list of such objects.
    ObjectList(&'static str),
    /// Plain text.
    Text,
}

use Body::{List, None as Empty, Object, ObjectList, Schema as One, Text};

/// Every route: method, path, summary, request body, answer body. A unit test checks it covers
/// [`authz::RULES`] exactly.
pub const ROUTES: &[(&str, &str, &str, Body, Body)] = &[
    ("POST", "/api/v1/login", "Sign in (a person's session token and CSRF token)", One("Login"), One("SignedIn")),
    ("POST", "/api/v1/logout", "End this session", Empty, Empty),
    ("GET", "/api/v1/me", "The signed-in person", Empty, One("Me")),
    ("POST", "/api/v1/me/password", "Change one's own password (sessions end)", One("ChangePassword"), One("UserChanged")),
    ("GET", "/api/v1/users", "Every account of the node", Empty, List("UserView")),
    ("POST", "/api/v1/users", "Create an account (a generated first password is answered once)", One("NewUser"), One("UserChanged")),
    ("POST", "/api/v1/users/{account}/roles", "Set a person's roles", One("SetRoles"), One("UserChanged")),
    ("POST", "/api/v1/users/{account}/password", "Set or generate a person's password", One("SetPassword"), One("UserChanged")),
    ("POST", "/api/v1/users/{account}/disable", "Disable an account", Empty, One("UserChanged")),
    ("POST", "/api/v1/users/{account}/enable", "Enable an account", Empty, One("UserChanged")),
    ("GET", "/api/v1/status", "The node's status", Empty, One("Status")),
    ("GET", "/api/v1/healthz", "Whether the node serves (no token)", Empty, Object("health: {status, catching_up}")),
    ("GET", "/api/v1/metrics", "Prometheus metrics (text exposition format)", Empty, Text),
    ("GET", "/api/v1/openapi.json", "This document", Empty, Object("OpenAPI 3.1 document")),
    ("GET", "/api/v1/peers", "Connected peers", Empty, ObjectList("crate::net::PeerInfo")),
    ("GET", "/api/v1/catalogue", "List or search the catalogue (?q=, ?code=, ?provider=, ?classification=, ?share_type=, ?open_type=)", Empty, One("Records")),
    ("POST", "/api/v1/catalogue", "Publish or update one entry (every problem reported at once)", Object("huitong_protocol::catalogue::RawEntry"), One("Published")),
    ("POST", "/api/v1/catalogue/batch", "Publish many entries at once", One("Batch"), One("BatchPublished")),
    ("POST", "/api/v1/catalogue/withdraw", "Withdraw an entry with its reason", One("Withdraw"), One("Published")),
    ("GET", "/api/v1/charter", "The charter this node holds", Empty, One("CharterView")),
    ("POST", "/api/v1/charter", "Offer a signed charter", One("CharterSubmit"), One("CharterView")),
    ("POST", "/api/v1/datasets", "Publish a dataset version from a file", Object("crate::dataset::publish::PublishRequest"), Object("crate::dataset::publish::PublishReport")),
    ("GET", "/api/v1/datasets/versions", "The versions of an entry (?code=, ?provider=)", Empty, List("Versions")),
    ("GET", "/api/v1/pulls", "Pulls started here (a data user: their own)", Empty, ObjectList("crate::transfer::pull::JobView")),
    ("POST", "/api/v1/pulls", "Start a pull (or attach to the same one running)", Object("crate::transfer::pull::PullRequest"), One("PullStarted")),
    ("GET", "/api/v1/pulls/{id}", "A pull's progress", Empty, Object("crate::transfer::pull::JobView")),
    ("POST", "/api/v1/pulls/{id}/cancel", "Cancel a pull", Empty, Object("crate::transfer::pull::JobView")),
    ("POST", "/api/v1/gc", "Collect the chunk store", Empty, Object("crate::dataset::gc::GcReport")),
    ("POST", "/api/v1/collect/run", "Collect a resource from its source now; a failed run is answered with its error", Object("crate::collect::views::RunRequest"), Object("crate::collect::runs::Run")),
    ("GET", "/api/v1/collect/runs", "Collection runs, newest first, and those under way (?code=, ?limit=)", Empty, Object("crate::collect::views::RunsView")),
    ("GET", "/api/v1/collect/sources", "Collection sources: schedule, next start, last run (never a password)", Empty, ObjectList("crate::collect::views::SourceView")),
    ("GET", "/api/v1/subscriptions", "Subscriptions: target, version delivered, lag, last error", Empty, ObjectList("crate::subscribe::SubscriptionView")),
    ("POST", "/api/v1/subscriptions", "Subscribe: deliver each new version into a directory or a database table (a database target is tried at once)", Object("crate::subscribe::request::SubscribeRequest"), Object("crate::subscribe::Subscription")),
    ("POST", "/api/v1/subscriptions/{name}/remove", "Unsubscribe", Empty, Object("crate::subscribe::Subscription")),
    ("POST", "/api/v1/backup", "Stage a consistent backup", Empty, One("BackupStaged")),
    ("GET", "/api/v1/applications", "Applications (?dir=incoming|outgoing)", Empty, List("AppView")),
    ("POST", "/api/v1/applications", "Apply for a conditionally shared resource", One("ApplyRequest"), One("AppView")),
    ("POST", "/api/v1/applications/{id}/approve", "Approve (possibly fewer 信息项 or a shorter period)", One("Approve"), One("AppView")),
    ("POST", "/api/v1/applications/{id}/reject", "Reject with a reason", One("Reason"), One("AppView")),
    ("POST", "/api/v1/applications/{id}/revoke", "Revoke a grant with a reason", One("Reason"), One("AppView")),
    ("GET", "/api/v1/audit", "Check the audit log: alarms, checkpoint, cosignatures", Empty, Object("crate::auditor::verify::LogReport")),
    ("GET", "/api/v1/audit/records/{id}", "An audit record, verified", Empty, ObjectList("crate::auditor::verify::RecordReport")),
    ("GET", "/api/v1/audit/records/{id}/proof", "A record's inclusion proof, to check offline", Empty, One("ProofFile")),
    ("POST", "/api/v1/audit/proofs", "Check a proof file", One("TextBody"), Object("crate::auditor::verify::RecordReport")),
    ("POST", "/api/v1/audit/checkpoints", "Import a checkpoint as evidence", One("TextBody"), One("ImportOutcome")),
    ("GET", "/api/v1/audit/receipts", "Pull receipts (?grant=, ?code=)", Empty, List("ReceiptView")),
    ("GET", "/api/v1/audit/transfers", "Transfers served (?grant=, ?code=)", Empty, List("TransferView")),
    ("GET", "/api/v1/audit/calls", "API service calls made and answered, and the call log's chain (?grant=, ?code=)", Empty, One("CallLogView")),
    ("GET", "/api/v1/audit/calls/stats", "API call statistics per service and per peer: calls, refusals, failures, latency (?hours=24)", Empty, One("CallStatsView")),
];

fn method(m: &str) -> HttpMethod {
    match m {
        "POST" => HttpMethod::Post,
        _ => HttpMethod::Get,
    }
}

/// The schema of a body, or `None` for no body.
fn schema(b: Body) -> Option<RefOr<Schema>> {
    let object = |what: &str| -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::Object)
            .description(Some(format!("JSON object: {what}")))
            .build()
            .into()
    };
    Some(match b {
        Body::None => return None,
        Body::Schema(name) => Ref::from_schema_name(name).into(),
        Body::List(name) => ArrayBuilder::new()
            .items(Ref::from_schema_name(name))
            .build()
            .into(),
        Body::Object(what) => object(what),
        Body::ObjectList(what) => ArrayBuilder::new().items(object(what)).build().into(),
        Body::Text => ObjectBuilder::new()
            .schema_type(Type::String)
            .build()
            .into(),
    })
}

/// What a rule needs, for people reading the document.
fn needs(need: Option<Need>) -> String {
    match need {
        Some(Need::Public) => "No token needed.".into(),
        Some(Need::SignedIn) => "Any signed-in person, or the node's admin token.".into(),
        Some(Need::AnyOf(roles)) => format!(
            "A person holding the role {}, or the node's admin token.",
            roles
                .iter()
                .map(|r| format!("{} ({})", r.as_str(), r.label()))
                .collect::<Vec<_>>()
                .join(" or ")
        ),
        Some(Need::AnyOfOrOnHub { anywhere, on_hub }) => format!(
            "{} {}",
            needs(Some(Need::AnyOf(anywhere))),
            needs(Some(Need::AnyOf(on_hub)))
                .replace(
                    "A person holding",
                    "On the hub's node, also a person holding"
                )
                .replace(", or the node's admin token", "")
        ),
        None => "The node's admin token only.".into(),
    }
}

/// Builds the document.
pub fn document() -> OpenApi {
    let components = ComponentsBuilder::new()
        .schema_from::<accounts::Login>()
        .schema_from::<accounts::SignedIn>()
        .schema_from::<accounts::Me>()
        .schema_from::<accounts::ChangePassword>()
        .schema_from::<accounts::UserView>()
        .schema_from::<accounts::NewUser>()
        .schema_from::<accounts::SetPassword>()
        .schema_from::<accounts::SetRoles>()
        .schema_from::<accounts::UserChanged>()
        .schema_from::<crate::accounts::Role>()
        .schema_from::<api::Status>()
        .schema_from::<api::AuditStatus>()
        .schema_from::<api::ForkInfo>()
        .schema_from::<api::Versions>()
        .schema_from::<api::PullStarted>()
        .schema_from::<api::BackupStaged>()
        .schema_from::<api::StagedAudit>()
        .schema_from::<api::Published>()
        .schema_from::<api::Batch>()
        .schema_from::<api::BatchPublished>()
        .schema_from::<api::Withdraw>()
        .schema_from::<api::Records>()
        .schema_from::<api::CharterView>()
        .schema_from::<api::CharterEquivocation>()
        .schema_from::<api::CharterSubmit>()
        .schema_from::<api::ApiError>()
        .schema_from::<api::ApplyRequest>()
        .schema_from::<api::AppView>()
        .schema_from::<api::Deadline>()
        .schema_from::<api::AppStep>()
        .schema_from::<api::Approve>()
        .schema_from::<api::Reason>()
        .schema_from::<api::TextBody>()
        .schema_from::<api::ProofFile>()
        .schema_from::<api::ImportOutcome>()
        .schema_from::<api::ReceiptView>()
        .schema_from::<api::TransferView>()
        .schema_from::<api::CallView>()
        .schema_from::<api::CallLogView>()
        .schema_from::<api::CallStatsRow>()
        .schema_from::<api::CallStatsView>()
        .security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        )
        .build();
    let mut paths = Paths::new();
    for &(m, path, summary, request, answer) in ROUTES {
        let need = authz::rule(&m.parse().unwrap_or(axum::http::Method::GET), path);
        let json = |s: RefOr<Schema>| ContentBuilder::new().schema(Some(s)).build();
        let mut ok = ResponseBuilder::new().description("OK");
        if let Some(s) = schema(answer) {
            let kind = if matches!(answer, Body::Text) {
                "text/plain"
            } else {
                "application/json"
            };
            ok = ok.content(kind, json(s));
        }
        let error = ResponseBuilder::new()
            .description("Refused: what was wrong and what to do")
            .content(
                "application/json",
                json(Ref::from_schema_name("ApiError").into()),
            );
        let mut op = OperationBuilder::new()
            .summary(Some(summary))
            .description(Some(needs(need)))
            .operation_id(Some(format!(
                "{}{}",
                m.to_ascii_lowercase(),
                path.trim_start_matches("/api/v1")
                    .replace(['/', '.', '{', '}'], "_")
            )))
            .response("200", ok.build())
            .response("4XX", error.build());
        if need != Some(Need::Public) {
            op = op.security(SecurityRequirement::new::<_, _, &str>("bearer", []));
        }
        if let Some(s) = schema(request) {
            op = op.request_body(Some(
                RequestBodyBuilder::new()
                    .content("application/json", json(s))
                    .required(Some(Required::True))
                    .build(),
            ));
        }
        for name in path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
        {
            op = op.parameter(
                ParameterBuilder::new()
                    .name(name)
                    .parameter_in(ParameterIn::Path)
                    .required(Required::True)
                    .schema(Some(ObjectBuilder::new().schema_type(Type::String).build())),
            );
        }
        paths.add_path_operation(path, vec![method(m)], op.build());
    }
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("Huitong node API")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "The local admin API of a Huitong node (loopback). Bearer token: the node's admin token (api.token) or a person's session token from POST /api/v1/login.",
                ))
                .build(),
        )
        .paths(paths)
        .components(Some(components))
        .build()
}

/// `GET /api/v1/openapi.json` (built once).
pub(super) async fn serve() -> Response {
    static DOC: OnceLock<String> = OnceLock::new();
    let body = DOC.get_or_init(|| {
        document()
            .to_json()
            .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    });
    let mut r = body.clone().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rule_is_documented_once_and_nothing_else() {
        let documented: std::collections::BTreeSet<(&str, &str)> =
            ROUTES.iter().map(|(m, p, ..)| (*m, *p)).collect();
        assert_eq!(documented.len(), ROUTES.len(), "a route twice");
        let ruled: std::collections::BTreeSet<(&str, &str)> =
            authz::RULES.iter().map(|(m, p, _)| (*m, *p)).collect();
        assert_eq!(documented, ruled);
    }

    #[test]
    fn the_document_is_openapi_3_1_and_every_reference_resolves() {
        let doc = document();
        let json = serde_json::to_value(&doc).unwrap_or_default();
        assert!(json["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")));
        let text = json.to_string();
        let schemas = &json["components"]["schemas"];
        for part in text.split("\"#/components/schemas/").skip(1) {
            let name = part.split('"').next().unwrap_or_default();
            assert!(
                schemas.get(name).is_some(),
                "{name} is referenced but not defined"
            );
        }
    }
}
