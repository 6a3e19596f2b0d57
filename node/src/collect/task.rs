//! The daemon's collection task: starts each source's runs on its schedule ([`super::schedule`]),
//! one run at a time; a failed scheduled run is retried after 1, 2, 4 … minutes
//! (`[collect] retries`, 3 by default) before the source waits for its next start, and
//! `[collect] alarm_after` failed runs in a row (3 by default) raise an alarm: an error in the
//! log (`target: huitong::alarm`) and a notification ([`crate::notify`]). A folder source takes
//! its waiting files one run after another; its failed runs are not retried (the refused file
//! was moved to `failed/`).
//!
//! Layering: a task of the daemon over [`super::Collector`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::runs::{self, Outcome, Trigger};
use super::schedule::{self, When};
use super::{CollectError, Collector};
use crate::state::now_ms;

/// The longest sleep between two looks at the schedules (an entry published or changed later
/// is seen within it; a look reads one catalogue record per unscheduled source).
const LOOK_EVERY: Duration = super::schedule::WATCH_EVERY;

/// What the task knows of one source.
#[derive(Default)]
struct Slot {
    /// The next start (ms), once known.
    next_ms: Option<u64>,
    /// Retries made since the last scheduled start.
    retries: u32,
}

/// Checks every source's schedule expression (at start, so a mistake stops the node with its
/// reason rather than silently never running).
pub fn check(config: &huitong_config::CollectConfig) -> Result<(), String> {
    for s in &config.sources {
        schedule::parse(
            s.schedule(),
            huitong_protocol::catalogue::UpdateCycle::Daily,
        )
        .map_err(|e| format!("collect.sources: {}: {e}", s.code))?;
    }
    Ok(())
}

/// The schedule of `code` now (the entry's 更新周期 may change), or `None` while the entry is
/// not published.
fn when(collector: &Collector, code: &str, schedule: &str) -> Option<When> {
    let state = collector.state();
    let record = crate::catalogue::get_by_provider(&state.store, &state.config.node.org_code, code)
        .ok()??;
    schedule::parse(schedule, record.entry.update_cycle).ok()
}

/// Runs the schedules until `shutdown`.
pub async fn run(collector: Arc<Collector>, shutdown: CancellationToken) {
    let state = collector.state().clone();
    let cfg = &state.config.collect;
    if cfg.sources.is_empty() {
        // Nothing to schedule; a task of the daemon ends only with the node.
        shutdown.cancelled().await;
        return;
    }
    info!(sources = cfg.sources.len(), "collection schedules running");
    let mut slots: HashMap<String, Slot> = HashMap::new();
    loop {
        let now = now_ms();
        let mut due = None;
        let mut wake = now + LOOK_EVERY.as_millis() as u64;
        for s in &cfg.sources {
            let slot = slots.entry(s.code.clone()).or_default();
            if slot.next_ms.is_none() {
                slot.next_ms = when(&collector, &s.code, s.schedule())
                    .and_then(|w| schedule::next_after(&w, state.timezone(), now));
            }
            match slot.next_ms {
                Some(t) if t <= now && due.is_none() => due = Some(s.code.clone()),
                Some(t) => wake = wake.min(t),
                None => {}
            }
        }
        let Some(code) = due else {
            let sleep = Duration::from_millis(wake.saturating_sub(now_ms()).max(100));
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(sleep) => continue,
            }
        };
        let retries = slots.get(&code).map_or(0, |s| s.retries);
        let trigger = if retries == 0 {
            Trigger::Schedule
        } else {
            Trigger::Retry
        };
        let ran = tokio::select! {
            _ = shutdown.cancelled() => return,
            r = collector.run(&code, runs::Start { trigger, attempt: retries, full: false }, None) => r,
        };
        let folder = cfg
            .source(&code)
            .is_some_and(|s| s.kind == huitong_config::SourceKind::Folder);
        let failed = match &ran {
            Ok(run) => run.outcome == Outcome::Failed,
            Err(CollectError::Busy(_) | CollectError::NoFile { .. }) => false,
            Err(e) => {
                warn!(code, error = %e, "a scheduled collection run could not start");
                true
            }
        };
        let slot = slots.entry(code.clone()).or_default();
        if folder {
            // A file taken (published or refused and put aside): the next waiting one at once.
            // None waiting: the next look. The folder itself unusable, or a file that could not
            // be put away (it would be taken again): waits of 1, 2, 4 … up to 64 minutes, so a
            // stuck folder does not fill the history.
            let stuck = ran
                .as_ref()
                .is_ok_and(|r| r.stuck || (r.file.is_none() && r.outcome == Outcome::Failed));
            if stuck {
                let wait = 60_000u64 << slot.retries.min(6);
                slot.retries += 1;
                slot.next_ms = Some(now_ms() + wait);
                warn!(
                    code,
                    in_secs = wait / 1000,
                    "the collection folder is stuck; looking again later"
                );
            } else {
                slot.retries = 0;
                slot.next_ms = ran.is_ok().then(now_ms);
            }
        } else if failed && slot.retries < cfg.retries() {
            let wait = 60_000u64 << slot.retries.min(10);
            slot.retries += 1;
            slot.next_ms = Some(now_ms() + wait);
            info!(
                code,
                retry = slot.retries,
                in_secs = wait / 1000,
                "the collection run will be retried"
            );
        } else {
            slot.retries = 0;
            slot.next_ms = None;
        }
        if failed {
            let alarm_after = cfg.alarm_after() as usize;
            match runs::failures_in_a_row(&state.store, &code, alarm_after) {
                Ok(n) if n >= alarm_after => {
                    error!(target: "huitong::alarm", code, failed_runs = n, "collection keeps failing: {n} runs in a row; see `huitong collect runs {code}`")
                }
                Ok(_) => {}
                Err(e) => warn!(code, error = %e, "cannot read the run history"),
            }
        }
    }
}
