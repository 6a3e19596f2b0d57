//! The node's long-running tasks, supervised: each is expected to run until shutdown, so one
//! that ends before — returning, failing or panicking — stops the whole node with an error
//! naming it (a service manager then restarts it), instead of leaving a node that answers its
//! API while its network or data server is dead (issue #10, point 4).
//!
//! Layering: a leaf (tokio only); the daemon uses it.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use tokio::task::{Id, JoinSet};
use tracing::{error, warn};

/// How long the other tasks get to stop once one has ended or shutdown began.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// Why a task ended, if it failed.
type Ended = Result<(), String>;

/// Supervised tasks.
#[derive(Default)]
pub struct Tasks {
    set: JoinSet<Ended>,
    names: HashMap<Id, &'static str>,
}

impl Tasks {
    /// Runs `task` under supervision as `name`; its error (if any) is reported by name.
    pub fn spawn<E: std::fmt::Display>(
        &mut self,
        name: &'static str,
        task: impl Future<Output = Result<(), E>> + Send + 'static,
    ) {
        let h = self
            .set
            .spawn(async move { task.await.map_err(|e| e.to_string()) });
        self.names.insert(h.id(), name);
    }

    /// Runs a task that has no error to return.
    pub fn spawn_infallible(
        &mut self,
        name: &'static str,
        task: impl Future<Output = ()> + Send + 'static,
    ) {
        self.spawn(name, async move {
            task.await;
            Ok::<(), std::convert::Infallible>(())
        });
    }

    /// Waits until one task ends, and says which and why: every task is meant to run until
    /// shutdown, so this is always a failure. Pending forever when there are no tasks.
    pub async fn first_end(&mut self) -> String {
        match self.set.join_next_with_id().await {
            Some(ended) => self.describe(ended),
            None => std::future::pending().await,
        }
    }

    /// After shutdown began: waits for every task to stop (at most [`STOP_GRACE`]), logging
    /// those that failed.
    pub async fn stop(mut self) {
        let all = async {
            while let Some(ended) = self.set.join_next_with_id().await {
                if let Err(why) = self.ended(ended) {
                    warn!(%why, "a task failed while stopping");
                }
            }
        };
        if tokio::time::timeout(STOP_GRACE, all).await.is_err() {
            warn!(grace = ?STOP_GRACE, "some tasks did not stop in time; stopping anyway");
        }
    }

    fn ended(&mut self, ended: Result<(Id, Ended), tokio::task::JoinError>) -> Result<(), String> {
        match ended {
            Ok((id, Ok(()))) => {
                self.names.remove(&id);
                Ok(())
            }
            Ok((id, Err(e))) => Err(format!("the {} task failed: {e}", self.name(id))),
            Err(e) => Err(format!(
                "the {} task {}",
                self.name(e.id()),
                if e.is_panic() {
                    "panicked (see the log above)"
                } else {
                    "was cancelled"
                }
            )),
        }
    }

    fn describe(&mut self, ended: Result<(Id, Ended), tokio::task::JoinError>) -> String {
        let id = match &ended {
            Ok((id, _)) => *id,
            Err(e) => e.id(),
        };
        let name = self.name(id);
        let why = match self.ended(ended) {
            Ok(()) => format!("the {name} task stopped unexpectedly"),
            Err(why) => why,
        };
        error!(task = name, %why, "a node task ended before shutdown; the node stops");
        why
    }

    fn name(&self, id: Id) -> &'static str {
        self.names.get(&id).copied().unwrap_or("unnamed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_task_to_end_is_named_with_its_cause() {
        let mut t = Tasks::default();
        t.spawn_infallible("steady", std::future::pending());
        t.spawn("network", async {
            Err::<(), _>("the ingest worker stopped")
        });
        let why = t.first_end().await;
        assert!(
            why.contains("network") && why.contains("ingest worker"),
            "{why}"
        );

        let mut t = Tasks::default();
        t.spawn_infallible("steady", std::future::pending());
        t.spawn_infallible("data server", async { panic!("boom") });
        let why = t.first_end().await;
        assert!(
            why.contains("data server") && why.contains("panicked"),
            "{why}"
        );

        let mut t = Tasks::default();
        t.spawn_infallible("agent", async {});
        assert!(t
            .first_end()
            .await
            .contains("agent task stopped unexpectedly"));
    }
}
