//! Notifications by webhook (`[notify] webhook` in `huitong.toml`): a JSON POST to the
//! department's gateway (政务微信, 钉钉, e-mail) for what people of this node must act on or
//! know — a new application to decide (incoming, accepted by the hub), the 办理时限 one working
//! day away, a decision on this node's own application (granted or rejected), a revocation,
//! an audit alarm (a fork, a split view, an omission, a suspended member), and a collection
//! source failing `[collect] alarm_after` runs in a row.
//!
//! The notifier compares what the node's views hold every [`SCAN_EVERY`] with what it saw
//! last; the first look after start sets the baseline and sends nothing (so a restart never
//! floods the gateway, and what happened while the node was down is not announced). Sending
//! runs apart from watching: at most [`QUEUE`] notifications wait (beyond that the oldest are
//! dropped and counted, `rejected.notify_dropped`), each is tried [`TRIES`] times with growing
//! pauses, [`TIMEOUT`] each.
//!
//! Layering: an actor beside the agent; reads the applications view, the store and the audit
//! service's counts; names no network module.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::applications::{self, deadline, AppRecord, AppState};
use crate::state::NodeState;

/// How often the views are compared with the last look.
pub const SCAN_EVERY: Duration = Duration::from_secs(2);
/// Notifications waiting to be sent, at most.
pub const QUEUE: usize = 1000;
/// Tries per notification.
pub const TRIES: u32 = 4;
/// Time allowed for one try.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// One notification, as POSTed.
#[derive(Clone, Debug, Serialize)]
pub struct Notification {
    /// `application.incoming`, `application.deadline`, `application.decided`,
    /// `application.revoked`, `audit.alarm` or `collect.alarm`.
    pub kind: &'static str,
    /// A sentence for people (中文).
    pub text: String,
    /// The application it is about, if any.
    pub application: Option<String>,
    /// Its resource code.
    pub code: Option<String>,
    /// Its state now.
    pub state: Option<&'static str>,
    /// The node that sends it (organisation name).
    pub node: String,
    /// When the notifier saw it (ms since the epoch).
    pub at_ms: u64,
}

/// An alarm count now, before, and the sentence for a rise.
type Rise = (u64, u64, fn(u64) -> String);

/// What the last look saw.
#[derive(Default)]
struct Seen {
    apps: HashMap<String, AppState>,
    deadline_warned: HashSet<String>,
    alarms: Alarms,
}

#[derive(Clone, Copy, Default, PartialEq, Eq)]
struct Alarms {
    forks: usize,
    split_views: u64,
    omissions: usize,
    suspended: usize,
    /// Collection sources whose last `[collect] alarm_after` runs all failed.
    collect_failing: usize,
}

fn member_name(state: &NodeState, key: &huitong_protocol::NodeId) -> String {
    state
        .with_charter(|c| c.and_then(|c| c.member(key)).map(|m| m.name.clone()))
        .unwrap_or_else(|| key.to_hex())
}

fn alarms(state: &NodeState) -> Alarms {
    Alarms {
        forks: state.store.forks().map(|f| f.len()).unwrap_or(0),
        split_views: crate::audit::checkpoints::evidence_count(state).unwrap_or(0),
        omissions: crate::audit::omission::list(state)
            .map(|o| o.len())
            .unwrap_or(0),
        suspended: state.with_charter(|c| {
            c.map_or(0, |c| {
                c.members
                    .iter()
                    .filter(|m| m.status != huitong_protocol::MemberStatus::Active)
                    .count()
            })
        }),
        collect_failing: collect_failing(state),
    }
}

fn collect_failing(state: &NodeState) -> usize {
    let cfg = &state.config.collect;
    let n = cfg.alarm_after() as usize;
    cfg.sources
        .iter()
        .filter(|s| {
            crate::collect::runs::failures_in_a_row(&state.store, &s.code, n).unwrap_or(0) >= n
        })
        .count()
}

/// Compares the views with `seen` (`None`: the first look, which only records); returns what
/// to announce.
fn scan(state: &NodeState, seen: &mut Option<Seen>) -> Vec<Notification> {
    let records = match applications::all(state) {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "notifier: cannot read applications");
            return Vec::new();
        }
    };
    let now = crate::state::now_ms();
    let node = state.config.node.name.clone();
    let alarms_now = alarms(state);
    let Some(last) = seen.as_mut() else {
        let mut first = Seen {
            alarms: alarms_now,
            ..Seen::default()
        };
        for r in &records {
            first.apps.insert(r.app.id.clone(), r.state);
        }
        *seen = Some(first);
        return Vec::new();
    };
    let me = state.id();
    let today = state.today();
    let days = state.config.applications.deadline_working_days();
    let mut out = Vec::new();
    let note = |kind, text: String, r: &AppRecord| Notification {
        kind,
        text,
        application: Some(r.app.id.clone()),
        code: Some(r.app.code.to_string()),
        state: Some(r.state.as_str()),
        node: node.clone(),
        at_ms: now,
    };
    for r in &records {
        let before = last.apps.insert(r.app.id.clone(), r.state);
        let (mine, theirs) = (r.applicant == me, r.app.provider == me);
        if !(mine || theirs) {
            continue;
        }
        let changed = before != Some(r.state);
        let applicant = member_name(state, &r.applicant);
        match r.state {
            AppState::Accepted if theirs && changed => out.push(note(
                "application.incoming",
                format!(
                    "新的共享申请待审批：{applicant} 申请 {}（{}），用途：{}",
                    r.app.code,
                    r.app.fields.join("、"),
                    r.app.purpose
                ),
                r,
            )),
            AppState::Granted | AppState::Rejected if mine && changed => out.push(note(
                "application.decided",
                format!(
                    "本部门对 {} 的申请已{}{}",
                    r.app.code,
                    if r.state == AppState::Granted {
                        "获授权，可以拉取"
                    } else {
                        "被拒绝"
                    },
                    r.reason
                        .as_deref()
                        .map(|x| format!("：{x}"))
                        .unwrap_or_default()
                ),
                r,
            )),
            AppState::Revoked if changed => out.push(note(
                "application.revoked",
                format!(
                    "{} 的授权已撤销{}",
                    r.app.code,
                    r.reason
                        .as_deref()
                        .map(|x| format!("：{x}"))
                        .unwrap_or_default()
                ),
                r,
            )),
            _ => {}
        }
        // The deadline one working day away (or past), once per application.
        if theirs && r.state == AppState::Accepted && !last.deadline_warned.contains(&r.app.id) {
            let accepted = r
                .history
                .iter()
                .rev()
                .find(|h| h.0 == AppState::Accepted)
                .map(|h| huitong_protocol::charter::today_in(state.timezone(), h.1));
            let left = accepted
                .and_then(|a| deadline::due(&a, days))
                .and_then(|due| deadline::working_days_left(&today, &due).map(|l| (due, l)));
            if let Some((due, left)) = left.filter(|(_, l)| *l <= 1) {
                last.deadline_warned.insert(r.app.id.clone());
                out.push(note(
                    "application.deadline",
                    format!(
                        "{applicant} 对 {} 的申请{}（办理时限 {due}）",
                        r.app.code,
                        if left < 0 {
                            "已逾期"
                        } else {
                            "即将到期"
                        }
                    ),
                    r,
                ));
            }
        }
    }
    let a = alarms_now;
    let b = last.alarms;
    let mut alarm = |what: String| {
        out.push(Notification {
            kind: "audit.alarm",
            text: what,
            application: None,
            code: None,
            state: None,
            node: node.clone(),
            at_ms: now,
        })
    };
    let rises: [Rise; 4] = [
        (a.forks as u64, b.forks as u64, |n| {
            format!("审计告警：发现订阅源分叉（共 {n} 处），请报告平台审计")
        }),
        (a.split_views, b.split_views, |n| {
            format!("审计告警：发现相互矛盾的审计日志检查点（共 {n} 组）")
        }),
        (a.omissions as u64, b.omissions as u64, |n| {
            format!("审计告警：有事件超过期限未进入审计日志（共 {n} 件）")
        }),
        (a.suspended as u64, b.suspended as u64, |n| {
            format!("成员被暂停：章程中暂停或只读的成员现有 {n} 个")
        }),
    ];
    for (now_n, before, text) in rises {
        if now_n > before {
            alarm(text(now_n));
        }
    }
    if a.collect_failing > b.collect_failing {
        out.push(Notification {
            kind: "collect.alarm",
            text: format!(
                "采集告警：{} 个数据源连续采集失败，请查看 huitong collect runs",
                a.collect_failing
            ),
            application: None,
            code: None,
            state: None,
            node: node.clone(),
            at_ms: now,
        });
    }
    last.alarms = a;
    out
}

/// Sends one notification, trying [`TRIES`] times; whether it got through.
async fn send(http: &reqwest::Client, url: &str, n: &Notification) -> bool {
    let mut pause = Duration::from_secs(1);
    for attempt in 1..=TRIES {
        match http.post(url).json(n).send().await {
            Ok(r) if r.status().is_success() => return true,
            Ok(r) => {
                warn!(kind = n.kind, status = %r.status(), attempt, "webhook refused a notification")
            }
            // Without the URL: a gateway's key is often in its path or query.
            Err(e) => {
                warn!(kind = n.kind, error = %e.without_url(), attempt, "webhook not reached")
            }
        }
        if attempt < TRIES {
            tokio::time::sleep(pause).await;
            pause *= 2;
        }
    }
    false
}

/// Runs until `shutdown` when `[notify] webhook` is set; returns at once otherwise.
pub async fn run(state: Arc<NodeState>, shutdown: CancellationToken) {
    let Some(url) = state.config.notify.webhook.clone() else {
        return;
    };
    let http = match crate::plain_http::builder()
        .map_err(|e| e.to_string())
        .and_then(|b| {
            b.timeout(TIMEOUT)
                // A gateway on the department's LAN: no proxy of the environment in between.
                .no_proxy()
                .build()
                .map_err(|e| e.to_string())
        }) {
        Ok(h) => h,
        Err(e) => {
            warn!(error = %e, "notifier: cannot build an HTTP client; no notifications");
            return;
        }
    };
    // The host only: a gateway's URL usually carries its key in the path or query.
    let host = url
        .split("://")
        .nth(1)
        .and_then(|r| r.split(['/', '?']).next())
        .unwrap_or("?");
    info!(webhook_host = %host, "notifications go to the webhook");
    let queue: Arc<std::sync::Mutex<VecDeque<Notification>>> = Arc::default();
    let ready = Arc::new(tokio::sync::Notify::new());
    let sender = {
        let (queue, ready, shutdown, state) = (
            queue.clone(),
            ready.clone(),
            shutdown.clone(),
            state.clone(),
        );
        tokio::spawn(async move {
            loop {
                let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                match next {
                    Some(n) => {
                        if !send(&http, &url, &n).await {
                            state.reject("notify_failed");
                        }
                    }
                    None => tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = ready.notified() => {}
                    },
                }
            }
        })
    };
    let mut seen = None;
    let mut tick = tokio::time::interval(SCAN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tick.tick() => {}
        }
        let (st, mut s) = (state.clone(), seen.take());
        let (found, s) = match tokio::task::spawn_blocking(move || (scan(&st, &mut s), s)).await {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "notifier scan panicked");
                (Vec::new(), None)
            }
        };
        seen = s;
        if found.is_empty() {
            continue;
        }
        {
            let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
            for n in found {
                info!(kind = n.kind, application = ?n.application, "notification");
                if q.len() >= QUEUE {
                    q.pop_front();
                    state.reject("notify_dropped");
                }
                q.push_back(n);
            }
        }
        ready.notify_one();
    }
    sender.abort();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::testing::department;
    use crate::store::Fork;
    use huitong_protocol::SecretKey;

    #[test]
    fn an_alarm_is_sent_once_when_its_count_rises_and_never_at_the_first_look() {
        let hub = SecretKey::from_bytes([7; 32]).public();
        let (_dir, state) = department(&hub);
        let mut seen = None;
        assert!(
            scan(&state, &mut seen).is_empty(),
            "the first look sends nothing"
        );
        let fork = Fork {
            feed: hub,
            seq: 3,
            first: Vec::new(),
            second: Vec::new(),
            detected_at_ms: 0,
        };
        let mut batch = rocksdb::WriteBatch::default();
        state.store.put_fork(&mut batch, &fork);
        {
            let w = state.store.writer();
            state.store.commit(&w, batch, true).unwrap();
        }
        let out = scan(&state, &mut seen);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(out[0].kind, "audit.alarm");
        assert!(out[0].text.contains("分叉"), "{}", out[0].text);
        assert!(scan(&state, &mut seen).is_empty(), "announced once");
    }
}
