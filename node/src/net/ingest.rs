//! The two stages between the event loop and the store, each on its own thread, so nothing
//! slow runs on the swarm's task: the verify stage opens each job's entries (decoding and
//! signature checks, a range on all cores), the ingest stage applies them to the store in
//! order. While one range answer is being applied the next one's signatures are checked.
//!
//! Layering: below the event loop; uses [`crate::feeds`] only.

use std::sync::Arc;

use huitong_protocol::feed::{FeedError, VerifiedEntry};
use huitong_protocol::NodeId;
use libp2p::{gossipsub, PeerId};
use tokio::sync::mpsc;
use tracing::{debug, error, warn};

use crate::feeds::{Feeds, Outcome};

/// Work for the ingest stages.
pub(super) enum IngestJob {
    /// A range response to ingest.
    Range {
        peer: PeerId,
        feed: NodeId,
        /// The first seq asked for.
        from: u64,
        entries: Vec<Vec<u8>>,
    },
    /// A gossiped entry to judge (its gossipsub validation waits for the outcome).
    Gossip {
        source: PeerId,
        id: gossipsub::MessageId,
        bytes: Vec<u8>,
    },
}

/// What the ingest stages did with a job.
pub(super) enum IngestDone {
    Range {
        peer: PeerId,
        feed: NodeId,
        /// The first seq asked for.
        from: u64,
        stored: usize,
        /// Stopped at an entry refused until the charter changes.
        refused: bool,
        /// The answer held something other than the entries asked for.
        mismatch: bool,
    },
    Gossip {
        source: PeerId,
        id: gossipsub::MessageId,
        outcome: Result<Outcome, String>,
    },
}

/// What a job answers to.
#[derive(Clone)]
enum Origin {
    Range {
        peer: PeerId,
        feed: NodeId,
        from: u64,
    },
    Gossip {
        source: PeerId,
        id: gossipsub::MessageId,
    },
}

impl Origin {
    /// The answer when handling the job panicked (a bug reached by some entry): nothing
    /// stored, the gossip refused — instead of stopping the node on every restart that meets
    /// the same entry again.
    fn panicked(self) -> IngestDone {
        error!("ingesting a job panicked; it is refused (report this as a bug)");
        match self {
            Origin::Range { peer, feed, from } => IngestDone::Range {
                peer,
                feed,
                from,
                stored: 0,
                refused: false,
                mismatch: false,
            },
            Origin::Gossip { source, id } => IngestDone::Gossip {
                source,
                id,
                outcome: Err("ingesting the entry panicked".into()),
            },
        }
    }
}

/// A job whose entries the verify stage opened.
struct Opened {
    origin: Origin,
    entries: Opening,
}

/// A job's entries, opened.
enum Opening {
    Range(Vec<Result<VerifiedEntry, FeedError>>),
    Gossip(Box<Result<VerifiedEntry, FeedError>>),
    /// Opening them panicked.
    Panicked,
}

/// Opened jobs waiting for the ingest stage: none (a hand-over), so at most one opened range
/// answer waits, held by the verify stage, besides the one being applied.
const OPENED_QUEUE: usize = 0;

/// Starts both stages: jobs from `jobs`, answers to `done`, until the event loop drops its
/// sender of `jobs`. An error when a thread cannot start (the event loop then sees its
/// channels closed).
pub(super) fn spawn(
    feeds: Arc<Feeds>,
    jobs: mpsc::Receiver<IngestJob>,
    done: mpsc::Sender<IngestDone>,
) -> std::io::Result<()> {
    let (opened_tx, opened_rx) = std::sync::mpsc::sync_channel(OPENED_QUEUE);
    std::thread::Builder::new()
        .name("huitong-ingest".into())
        .spawn(move || apply_stage(&feeds, &opened_rx, &done))?;
    std::thread::Builder::new()
        .name("huitong-verify".into())
        .spawn(move || verify_stage(jobs, &opened_tx))?;
    Ok(())
}

/// Opens each job's entries, in the order the jobs came.
fn verify_stage(mut jobs: mpsc::Receiver<IngestJob>, out: &std::sync::mpsc::SyncSender<Opened>) {
    while let Some(job) = jobs.blocking_recv() {
        let (origin, open): (Origin, Box<dyn FnOnce() -> Opening>) = match job {
            IngestJob::Range {
                peer,
                feed,
                from,
                entries,
            } => (
                Origin::Range { peer, feed, from },
                Box::new(move || Opening::Range(crate::feeds::open_range(&entries))),
            ),
            IngestJob::Gossip { source, id, bytes } => (
                Origin::Gossip { source, id },
                Box::new(move || Opening::Gossip(Box::new(VerifiedEntry::open(&bytes)))),
            ),
        };
        let entries = std::panic::catch_unwind(std::panic::AssertUnwindSafe(open))
            .unwrap_or(Opening::Panicked);
        if out.send(Opened { origin, entries }).is_err() {
            break;
        }
    }
}

/// Applies opened jobs one after another until the verify stage ends.
fn apply_stage(
    feeds: &Feeds,
    opened: &std::sync::mpsc::Receiver<Opened>,
    done: &mpsc::Sender<IngestDone>,
) {
    while let Ok(job) = opened.recv() {
        let origin = job.origin.clone();
        let run = std::panic::AssertUnwindSafe(|| apply(feeds, job));
        let reply = std::panic::catch_unwind(run).unwrap_or_else(|_| origin.panicked());
        if done.blocking_send(reply).is_err() {
            break;
        }
    }
}

/// Applies one opened job.
fn apply(feeds: &Feeds, job: Opened) -> IngestDone {
    match (job.origin, job.entries) {
        (Origin::Range { peer, feed, from }, Opening::Range(entries)) => {
            let (stored, refused, mismatch) = match feeds.ingest_opened_range(&feed, from, entries)
            {
                Ok(r) => (r.stored, r.refused.is_some(), r.mismatch),
                Err(e) => {
                    warn!(error = %e, "store error while ingesting a range");
                    (0, false, false)
                }
            };
            debug!(%peer, %feed, from, stored, refused, mismatch, "ingested range");
            IngestDone::Range {
                peer,
                feed,
                from,
                stored,
                refused,
                mismatch,
            }
        }
        (Origin::Gossip { source, id }, Opening::Gossip(entry)) => IngestDone::Gossip {
            source,
            id,
            outcome: feeds.ingest_opened(*entry).map_err(|e| e.to_string()),
        },
        // Opening panicked (a range is never opened as gossip, nor the other way round).
        (origin, _) => origin.panicked(),
    }
}
