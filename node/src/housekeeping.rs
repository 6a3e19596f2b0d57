//! Periodic housekeeping, so what a node holds does not only grow: every `interval` it
//! garbage-collects the chunk store ([`crate::dataset::gc`], keeping superseded versions of
//! others' resources for `gc_grace`) and expires grant events that waited `pending_max_age` for
//! the step they follow ([`crate::applications::expire_pending`]). The first run comes one
//! interval after start, so a node back from a long absence first catches up on the feeds.
//! `huitong gc` runs the collection at once.
//!
//! The timings come from [`ENV`] (`interval_secs=…,gc_grace_secs=…,pending_max_age_secs=…`,
//! read at start; an invalid value is a start-up error naming it), else the defaults: 1 hour,
//! 24 hours, 30 days. Tests use short ones.
//!
//! Layering: a service above the views it drives (dataset, applications) and the feeds; the
//! daemon starts it and the admin API reads its settings.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::dataset::gc::{self, GcError};
use crate::feeds::Feeds;

/// The environment variable with the housekeeping timings.
pub const ENV: &str = "HUITONG_HOUSEKEEPING";

/// The housekeeping timings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Time between two runs.
    pub interval: Duration,
    /// How long an older version of another provider's resource is kept after a newer one
    /// arrived.
    pub gc_grace: Duration,
    /// How long a grant event waits for the step it follows.
    pub pending_max_age: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(3600),
            gc_grace: Duration::from_secs(24 * 3600),
            pending_max_age: crate::applications::PENDING_MAX_AGE,
        }
    }
}

impl Settings {
    /// Parses `name=seconds` pairs over the defaults; unknown names and bad values are errors.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut s = Self::default();
        for pair in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("{ENV}: {pair:?}: expected name=seconds"))?;
            let secs: u64 = value
                .trim()
                .parse()
                .map_err(|_| format!("{ENV}: {pair:?}: expected a whole number of seconds"))?;
            let d = Duration::from_secs(secs);
            match name.trim() {
                "interval_secs" if secs > 0 => s.interval = d,
                "gc_grace_secs" => s.gc_grace = d,
                "pending_max_age_secs" => s.pending_max_age = d,
                "interval_secs" => return Err(format!("{ENV}: interval_secs must be at least 1")),
                other => {
                    return Err(format!(
                        "{ENV}: {other:?}: expected interval_secs, gc_grace_secs or pending_max_age_secs"
                    ))
                }
            }
        }
        Ok(s)
    }

    /// The settings from [`ENV`], or the defaults when it is not set.
    pub fn from_env() -> Result<Self, String> {
        match std::env::var(ENV) {
            Ok(text) => Self::parse(&text),
            Err(_) => Ok(Self::default()),
        }
    }
}

/// One round: the chunk store's collection, then the expiry of waiting grant events. Failures
/// are logged; the next round tries again.
pub fn once(feeds: &Feeds, settings: &Settings) {
    match gc::collect(feeds.state(), settings.gc_grace) {
        Ok(_) => {}
        Err(GcError::Busy) => info!("chunk store not collected: a publish or a pull is running"),
        Err(e) => warn!(error = %e, "chunk store not collected"),
    }
    match crate::applications::expire_pending(feeds, settings.pending_max_age) {
        Ok(0) => {}
        Ok(n) => info!(expired = n, "grant events that waited too long expired"),
        Err(e) => warn!(error = %e, "waiting grant events not checked"),
    }
}

/// Runs [`once`] every `settings.interval` until `shutdown`.
pub async fn run(feeds: Arc<Feeds>, settings: Settings, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(settings.interval) => {}
        }
        let f = feeds.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || once(&f, &settings)).await {
            warn!(error = %e, "housekeeping round failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_parse() {
        let s = Settings::parse("interval_secs=2, gc_grace_secs=0,pending_max_age_secs=5").unwrap();
        assert_eq!(
            s,
            Settings {
                interval: Duration::from_secs(2),
                gc_grace: Duration::ZERO,
                pending_max_age: Duration::from_secs(5),
            }
        );
        assert_eq!(Settings::parse("").unwrap(), Settings::default());
        assert!(Settings::parse("interval_secs=0").is_err());
        assert!(Settings::parse("grace=1")
            .unwrap_err()
            .contains("gc_grace_secs"));
        assert!(Settings::parse("gc_grace_secs=soon").is_err());
    }
}
