//! The auditor's page: alarms first (split views, omissions, forks, charter equivocations,
//! suspended members),
//! then the log's size, latest checkpoint and who cosigned it; looking up a record and
//! downloading its inclusion proof; receipts per grant and per resource. Read-only.
//!
//! On the hub the operators (系统管理员) read it too: the alarms and the log's status only.
//! Records and receipts say what people did, and auditing that stays the security auditor's
//! (三员分立), so for an operator they are neither looked up nor shown.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Extension;
use serde::Deserialize;

use super::format;
use super::guard::{encode, Viewer};
use super::page::{show, Chrome, PageError, PageResult};
use crate::api::ReceiptView;
use crate::auditor::verify::{self, RecordReport};
use crate::http::audit::{receipt_views, ReceiptQuery};
use crate::http::Ctx;

/// What the audit page is asked for.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct AuditQuery {
    #[serde(default)]
    record: String,
    #[serde(default)]
    grant: String,
    #[serde(default)]
    code: String,
}

/// A receipt row.
pub(crate) struct ReceiptRow {
    r: ReceiptView,
    at: String,
    size: String,
    by: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    c: Chrome,
    alarms: Vec<String>,
    log_error: Option<String>,
    origin: String,
    size: String,
    root: String,
    cosigned: String,
    pending: String,
    record: String,
    found: Vec<RecordReport>,
    record_error: Option<String>,
    grant: String,
    code: String,
    receipts: Vec<ReceiptRow>,
    /// The viewer is a security auditor (not only the hub's operator): lookups and receipts.
    auditing: bool,
}

/// `GET /audit`.
pub(crate) async fn page(
    State(ctx): State<Ctx>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<AuditQuery>,
) -> PageResult {
    let lang = viewer.lang;
    let s = &ctx.state;
    let tz = s.timezone();
    let mut alarms = Vec::new();
    let (mut origin, mut size, mut root, mut cosigned, mut pending) = Default::default();
    let mut log_error = None;
    match verify::log(s, &ctx.transport).await {
        Ok(report) => {
            for a in report.split_views.iter().chain(&report.omissions) {
                alarms.push(format!(
                    "{} · {}",
                    format::time(tz, a.detected_at_ms),
                    a.reason
                ));
            }
            origin = report.origin;
            if let Some(l) = report.latest {
                size = format::number(l.size);
                root = l.root;
                cosigned = l.cosigned_by.join("、");
            }
            pending = report
                .pending_witness
                .map(|p| format::number(p.size))
                .unwrap_or_default();
        }
        Err(e) => log_error = Some(e),
    }
    for f in s.store.forks().map_err(PageError::internal)? {
        let who = s
            .with_charter(|c| c.and_then(|c| c.member(&f.feed)).map(|m| m.name.clone()))
            .unwrap_or_else(|| f.feed.to_hex());
        alarms.push(format!(
            "{} · {} {who} {} {}",
            format::time(tz, f.detected_at_ms),
            lang.t("分叉：成员", "Fork: member"),
            lang.t("在序号", "at seq"),
            f.seq
        ));
    }
    for (name, status) in super::page::suspended_members(&ctx) {
        alarms.push(format!(
            "{} {name}（{}）",
            lang.t("成员已被章程暂停：", "Member suspended by the charter:"),
            if lang.en() {
                status.as_str()
            } else {
                match status {
                    huitong_protocol::charter::MemberStatus::ReadOnly => "只读",
                    _ => "暂停",
                }
            }
        ));
    }
    let equivocations = crate::http::charter_equivocations(s).map_err(PageError::internal)?;
    for e in equivocations {
        alarms.push(format!(
            "{} v{}: {} ≠ {}",
            lang.t("章程矛盾", "Contradicting charter"),
            e.version,
            e.held,
            e.other
        ));
    }
    // The hub's operator sees the status and alarms only: nothing is looked up for them.
    let auditing = viewer.has(crate::accounts::Role::Auditor);
    let q = if auditing { q } else { AuditQuery::default() };
    let record = q.record.trim().to_string();
    let (found, record_error) = if record.is_empty() {
        (Vec::new(), None)
    } else {
        match verify::records(s, &ctx.transport, &record, None).await {
            Ok(found) => (found.into_iter().map(|(r, _)| r).collect(), None),
            Err(e) => (Vec::new(), Some(e)),
        }
    };
    let rq = ReceiptQuery {
        grant: Some(q.grant.trim().to_string()).filter(|g| !g.is_empty()),
        code: Some(q.code.trim().to_string()).filter(|c| !c.is_empty()),
    };
    let mut receipts = if auditing {
        receipt_views(&ctx, &rq)?
    } else {
        Vec::new()
    };
    receipts.sort_by_key(|r| std::cmp::Reverse(r.at_ms));
    let receipts = receipts
        .into_iter()
        .take(200)
        .map(|r| ReceiptRow {
            at: format::time(tz, r.at_ms),
            size: format::size(r.bytes),
            by: r
                .by
                .as_ref()
                .map_or_else(|| "—".into(), |a| format!("{} ({})", a.name, a.account)),
            r,
        })
        .collect();
    show(&AuditPage {
        c: Chrome::new(
            &ctx,
            &viewer,
            if auditing {
                lang.t("审计", "Audit")
            } else {
                lang.t("审计（只读）", "Audit (read-only)")
            },
        ),
        alarms,
        log_error,
        origin,
        size,
        root,
        cosigned,
        pending,
        record,
        found,
        record_error,
        grant: q.grant,
        code: q.code,
        receipts,
        auditing,
    })
}

/// Which record's proof.
#[derive(Debug, Deserialize)]
pub(crate) struct ProofQuery {
    id: String,
    index: Option<u64>,
}

/// `GET /audit/proof?id=…&index=…`: the record's inclusion proof as a file (checked offline
/// with `huitong audit check-proof`).
pub(crate) async fn proof(
    State(ctx): State<Ctx>,
    Extension(viewer): Extension<Viewer>,
    Query(q): Query<ProofQuery>,
) -> Result<Response, PageError> {
    let lang = viewer.lang;
    let found = verify::records(&ctx.state, &ctx.transport, &q.id, q.index)
        .await
        .map_err(|e| PageError::new(StatusCode::UNPROCESSABLE_ENTITY, e))?;
    let [(report, proof)] = <[_; 1]>::try_from(found).map_err(|found: Vec<_>| {
        PageError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "{} {}",
                found.len(),
                lang.t(
                    "条记录同名，请从列表中选择其一。",
                    "records have this id; choose one from the list."
                ),
            ),
        )
    })?;
    let name = format!(
        "proof-{}-{}.txt",
        encode(&report.id).replace('%', ""),
        report.index
    );
    let mut r = super::page::download(proof.to_bytes(), "text/plain; charset=utf-8", &name);
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}
