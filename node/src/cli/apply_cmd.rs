//! `huitong apply`, `applications`, `approve`, `reject`, `revoke`: the 有条件共享 workflow.

use std::path::Path;

use clap::Args;

use super::output;
use crate::api::{AppView, ApplyRequest, Approve, Reason};
use crate::client::ApiClient;

/// `huitong apply`.
#[derive(Args, Debug)]
pub struct ApplyArgs {
    /// Resource code.
    code: String,
    /// 信息项 asked for, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    fields: Vec<String>,
    /// 用途: what the data is for.
    #[arg(long)]
    purpose: String,
    /// 依据: the legal or policy basis.
    #[arg(long)]
    basis: String,
    /// Last day of use, YYYY-MM-DD.
    #[arg(long)]
    until: String,
    /// Provider USCC, when several providers use the code.
    #[arg(long)]
    provider: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `huitong applications`.
#[derive(Args, Debug)]
pub struct ListArgs {
    /// Only applications to this node (as provider; all of them on the hub).
    #[arg(long, conflicts_with = "outgoing")]
    incoming: bool,
    /// Only this node's own applications.
    #[arg(long)]
    outgoing: bool,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// A decision on one application.
#[derive(Args, Debug)]
pub struct DecideArgs {
    /// Application id (from `huitong applications`).
    id: String,
    /// The reason (required to reject or revoke).
    #[arg(long, default_value = "")]
    reason: String,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `huitong approve`: the provider's approval, possibly of less than was applied for.
#[derive(Args, Debug)]
pub struct ApproveArgs {
    /// Application id (from `huitong applications --incoming`).
    id: String,
    /// Approve only these 信息项 (comma-separated, a subset of those applied for).
    #[arg(long, value_delimiter = ',')]
    fields: Option<Vec<String>>,
    /// Approve until this day (YYYY-MM-DD, federation time), not after the one applied for.
    #[arg(long)]
    until: Option<String>,
    /// API services return these approved 信息项 masked (脱敏; comma-separated), e.g. 身份证号.
    #[arg(long, value_delimiter = ',')]
    masked: Vec<String>,
    /// API services answer only 核验 (match / no match) under this grant, no lookups.
    #[arg(long)]
    verify_only: bool,
    /// API services answer at most this many calls a second under this grant (within the
    /// provider's `[services] calls_per_second`).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    calls_per_second: Option<u32>,
    /// API services answer at most this many calls a day under this grant (within the
    /// provider's `[services] calls_per_day`).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    calls_per_day: Option<u64>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

fn print(v: &[AppView], as_json: bool) -> anyhow::Result<()> {
    output::list(v, as_json, "applications", |a| {
        vec![
            a.id.clone(),
            a.state.clone(),
            a.code.clone(),
            format!("{} → {}", a.provider, a.applicant),
            format!(
                "[{}] until {}{}{}",
                a.fields.join(","),
                a.until,
                approved(a),
                a.reason
                    .as_deref()
                    .map(|r| format!("  ({r})"))
                    .unwrap_or_default()
            ) + &people(a)
                + &due(a),
        ]
    })
}

/// "  due 2026-12-14 (3 working days left)" while the provider has to decide.
fn due(a: &AppView) -> String {
    match &a.deadline {
        None => String::new(),
        Some(d) if d.working_days_left < 0 => format!(
            "  OVERDUE since {} ({} working days)",
            d.due, -d.working_days_left
        ),
        Some(d) => format!(
            "  due {} ({})",
            d.due,
            super::count(
                d.working_days_left as u64,
                "working day left",
                "working days left"
            )
        ),
    }
}

/// "  [submitted by 张三 (zhangsan); approved by 李四 (lisi)]": the people who took steps.
fn people(a: &AppView) -> String {
    let steps: Vec<String> = a
        .timeline
        .iter()
        .filter_map(|s| s.by.as_ref().map(|by| format!("{} by {by}", s.state)))
        .collect();
    if steps.is_empty() {
        String::new()
    } else {
        format!("  [{}]", steps.join("; "))
    }
}

/// ", approved [..] until .." when the provider approved less than applied for.
fn approved(a: &AppView) -> String {
    let fields = a.approved_fields.as_ref().filter(|f| **f != a.fields);
    let until = a.approved_until.as_ref().filter(|u| **u != a.until);
    let mut out = String::new();
    if fields.is_some() || until.is_some() {
        out = format!(
            "; approved [{}] until {}",
            fields.unwrap_or(&a.fields).join(","),
            until.unwrap_or(&a.until)
        );
    }
    // The terms of calls, when the approval set any.
    for term in a.call_terms(true) {
        out += "; ";
        out += &term;
    }
    out
}

pub(super) async fn approve(dir: &Path, a: ApproveArgs) -> anyhow::Result<()> {
    let v: AppView = ApiClient::new(dir)?
        .post(
            &format!("/applications/{}/approve", a.id),
            &Approve {
                fields: a.fields,
                until: a.until,
                masked: a.masked,
                verify_only: a.verify_only,
                calls_per_second: a.calls_per_second,
                calls_per_day: a.calls_per_day,
            },
        )
        .await?;
    print(&[v], a.json)
}

pub(super) async fn apply(dir: &Path, a: ApplyArgs) -> anyhow::Result<()> {
    let req = ApplyRequest {
        code: a.code,
        provider: a.provider,
        fields: a.fields,
        purpose: a.purpose,
        basis: a.basis,
        until: a.until,
    };
    let v: AppView = ApiClient::new(dir)?.post("/applications", &req).await?;
    print(&[v], a.json)
}

pub(super) async fn list(dir: &Path, a: ListArgs) -> anyhow::Result<()> {
    #[derive(serde::Serialize)]
    struct Q {
        dir: Option<&'static str>,
    }
    let q = Q {
        dir: if a.incoming {
            Some("incoming")
        } else if a.outgoing {
            Some("outgoing")
        } else {
            None
        },
    };
    let v: Vec<AppView> = ApiClient::new(dir)?.get("/applications", &q).await?;
    print(&v, a.json)
}

pub(super) async fn decide(dir: &Path, verb: &str, a: DecideArgs) -> anyhow::Result<()> {
    let v: AppView = ApiClient::new(dir)?
        .post(
            &format!("/applications/{}/{verb}", a.id),
            &Reason { reason: a.reason },
        )
        .await?;
    print(&[v], a.json)
}
