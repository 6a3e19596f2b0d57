//! In-portal notifications (站内通知), for the person signed in, from what the node holds: an
//! approver's new incoming applications and deadlines one working day away or past; a data
//! user's decisions (approved, rejected, granted, revoked) on the applications they submitted;
//! an auditor's audit alarms. The same events go to the webhook ([`crate::notify`]). Opening
//! the page marks them read (kept with the account, so it survives a restart); the navigation
//! shows how many are unread.

use askama::Template;
use axum::extract::State;
use axum::Extension;

use super::format;
use super::guard::Viewer;
use super::page::{show, Chrome, Lang, PageError, PageResult};
use crate::accounts::Role;
use crate::api::AppView;
use crate::http::applications as api;
use crate::http::Ctx;

/// Notifications older than this are not shown.
const KEEP_MS: u64 = 30 * 24 * 3600 * 1000;
/// Most notifications shown.
const MAX_SHOWN: usize = 100;

/// One notification.
#[derive(Clone, Debug)]
pub(crate) struct Notice {
    at_ms: u64,
    text: String,
    href: String,
    /// `warn` for deadlines and alarms, `""` otherwise.
    class: &'static str,
}

/// The decision steps a data user is told of, with their words.
fn decision(state: &str, lang: Lang) -> Option<&'static str> {
    Some(match state {
        "approved" => lang.t("已批准", "was approved"),
        "rejected" => lang.t("被驳回", "was rejected"),
        "granted" => lang.t("已授权，可以拉取", "was granted: you can pull"),
        "revoked" => lang.t("的授权已被撤销", "had its grant revoked"),
        _ => return None,
    })
}

/// The notifications of `viewer`, newest first.
pub(crate) fn notices(ctx: &Ctx, viewer: &Viewer) -> Vec<Notice> {
    let lang = viewer.lang;
    let now = crate::state::now_ms();
    let since = now.saturating_sub(KEEP_MS);
    let mut out = Vec::new();
    let Some(account) = viewer.account() else {
        return out;
    };
    if viewer.has(Role::Approver) {
        for v in api::awaiting(ctx).unwrap_or_default() {
            let href = format!("/applications/{}", v.id);
            if let Some(first) = v.timeline.first() {
                out.push(Notice {
                    at_ms: first.at_ms,
                    text: format!(
                        "{}{} {} {}",
                        lang.t("新的申请：", "New application: "),
                        v.applicant,
                        lang.t("申请使用", "applies for"),
                        v.code
                    ),
                    href: href.clone(),
                    class: "",
                });
            }
            if let Some(d) = v.deadline.as_ref().filter(|d| d.working_days_left <= 1) {
                out.push(Notice {
                    at_ms: now,
                    text: format!(
                        "{} {} · {} {}",
                        if d.working_days_left < 0 {
                            lang.t("已超过办理时限：", "Past its deadline:")
                        } else {
                            lang.t("办理时限将至：", "Deadline within a working day:")
                        },
                        v.code,
                        lang.t("办理时限", "due"),
                        d.due
                    ),
                    href,
                    class: "warn",
                });
            }
        }
    }
    if viewer.has(Role::DataUser) {
        let Some(p) = viewer.principal.as_ref() else {
            return out;
        };
        let mine: Vec<AppView> = api::views(ctx, p, Some("outgoing")).unwrap_or_default();
        for v in mine.into_iter().filter(|v| {
            v.timeline
                .first()
                .and_then(|s| s.by.as_ref())
                .is_some_and(|by| by.account == account.name)
        }) {
            // The hub's issuing of the grant shows as a second `approved`: told once.
            let mut told = std::collections::BTreeSet::new();
            for step in &v.timeline {
                if !told.insert(step.state.as_str()) {
                    continue;
                }
                if let Some(word) = decision(&step.state, lang) {
                    out.push(Notice {
                        at_ms: step.at_ms,
                        text: format!(
                            "{} {} {word}",
                            lang.t("您对", "Your application for"),
                            v.code
                        ) + lang.t("的申请", ""),
                        href: format!("/applications/{}", v.id),
                        class: if step.state == "rejected" || step.state == "revoked" {
                            "warn"
                        } else {
                            ""
                        },
                    });
                }
            }
        }
    }
    if viewer.has(Role::Auditor) {
        if let Some(alarm) = super::page::alarm(ctx, lang) {
            out.push(Notice {
                at_ms: now,
                text: alarm,
                href: "/audit".into(),
                class: "warn",
            });
        }
    }
    out.retain(|n| n.at_ms >= since);
    out.sort_by_key(|n| std::cmp::Reverse(n.at_ms));
    out.truncate(MAX_SHOWN);
    out
}

/// How many of `viewer`'s notifications are newer than their last visit to the page (a
/// standing deadline or alarm counts until it is resolved).
/// Every page shows the count: it is reused for [`UNREAD_FOR`] per person (and forgotten when
/// they open the page), so a page view does not read every application.
pub(crate) fn unread(ctx: &Ctx, viewer: &Viewer) -> usize {
    let Some(account) = viewer.account() else {
        return 0;
    };
    let key = (
        ctx.state.id().to_hex(),
        account.name.clone(),
        viewer.lang.en(),
    );
    let cache = UNREAD.get_or_init(Default::default);
    if let Some((at, n)) = cache
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
        .copied()
    {
        if at.elapsed() < UNREAD_FOR {
            return n;
        }
    }
    let seen = account.notices_seen_ms;
    let n = notices(ctx, viewer)
        .iter()
        .filter(|n| n.at_ms > seen || n.class == "warn")
        .count();
    let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
    // Bounded: a node has at most MAX_ACCOUNTS people; stale entries go first.
    if c.len() >= 2 * crate::accounts::MAX_ACCOUNTS {
        c.retain(|_, (at, _)| at.elapsed() < UNREAD_FOR);
    }
    c.insert(key, (std::time::Instant::now(), n));
    n
}

/// How long an unread count is reused.
const UNREAD_FOR: std::time::Duration = std::time::Duration::from_secs(5);

/// Unread counts by (node, account, English), with when they were counted.
type UnreadCache = std::sync::Mutex<
    std::collections::HashMap<(String, String, bool), (std::time::Instant, usize)>,
>;
static UNREAD: std::sync::OnceLock<UnreadCache> = std::sync::OnceLock::new();

/// Forgets `account`'s cached count (they have just read their notifications).
fn forget_unread(ctx: &Ctx, account: &str) {
    if let Some(c) = UNREAD.get() {
        let node = ctx.state.id().to_hex();
        c.lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(n, a, _), _| !(n == &node && a == account));
    }
}

/// A row of the page.
pub(crate) struct Row {
    time: String,
    text: String,
    href: String,
    class: &'static str,
    new: bool,
}

#[derive(Template)]
#[template(path = "notices.html")]
struct NoticesPage {
    c: Chrome,
    rows: Vec<Row>,
}

/// `GET /notifications`: the list; everything shown is marked read.
pub(crate) async fn page(
    State(ctx): State<Ctx>,
    Extension(viewer): Extension<Viewer>,
) -> PageResult {
    let lang = viewer.lang;
    let tz = ctx.state.timezone();
    let seen = viewer.account().map_or(0, |a| a.notices_seen_ms);
    let list = notices(&ctx, &viewer);
    let rows = list
        .iter()
        .map(|n| Row {
            time: format::time(tz, n.at_ms),
            text: n.text.clone(),
            href: n.href.clone(),
            class: n.class,
            new: n.at_ms > seen,
        })
        .collect();
    // A time ahead of this node's clock (a member's clock, or a hostile one) is not taken as
    // seen: it would hide what arrives until then.
    let newest = list
        .iter()
        .map(|n| n.at_ms)
        .max()
        .unwrap_or(0)
        .min(crate::state::now_ms());
    let mut viewer = viewer;
    if newest > seen {
        if let Some(a) = viewer.account() {
            let (accounts, name) = (ctx.people.accounts.clone(), a.name.clone());
            let updated =
                tokio::task::spawn_blocking(move || accounts.set_notices_seen(&name, newest))
                    .await
                    .map_err(PageError::internal)?
                    .map_err(PageError::internal)?;
            forget_unread(&ctx, &updated.name);
            // The page's own navigation counts from the visit just recorded.
            if let Some(crate::http::authz::Principal::Person { account, .. }) =
                viewer.principal.as_mut()
            {
                *account = updated;
            }
        }
    }
    show(&NoticesPage {
        c: Chrome::new(&ctx, &viewer, lang.t("通知", "Notifications")),
        rows,
    })
}
