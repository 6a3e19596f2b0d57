//! Re-judging feeds when a new charter version closes one below what this node took, and
//! rebuilding the views from the entries that stand.
//!
//! A closure (`ClosedFeed`) keeps a stopped member's entries up to `last_seq`. A node that took
//! later entries before the closing version reached it holds entries that every node now refuses
//! — a fresh node never takes them. To reach the same view, this node drops them (the feed's
//! head goes back to the last entry that stands) and rebuilds every view from the stored
//! entries, as a fresh node would build them. A marker in `meta`, committed with the truncation,
//! makes a rebuild that a crash interrupted run again at the next start. The writer lock is held
//! throughout: a rebuild is rare (an authority closing a feed below what a node took) and meanwhile
//! the node stores nothing else.
//!
//! The audit queue and the omission watch are not rebuilt: their rows are keyed by the event, so
//! replaying is idempotent, and an event once logged by the hub stays logged.

use std::collections::HashMap;

use huitong_protocol::feed::VerifiedEntry;
use huitong_protocol::NodeId;
use rocksdb::WriteBatch;
use tracing::{info, warn};

use super::{Feeds, Signer};
use crate::store::{stored_stamp, Head, StoreError, Writer};

const REBUILD_MARKER: &[u8] = b"views_rebuild_pending";

impl Feeds {
    /// Drops every stored entry that a closure in the charter history refuses — on a feed this
    /// node took past a closure before the closing version reached it — and rebuilds the views
    /// if any was dropped; also finishes a rebuild a crash interrupted. Idempotent: run at start
    /// and after every charter version accepted. Returns how many entries were dropped.
    pub fn enforce_closures(&self) -> Result<u64, StoreError> {
        let state = &*self.state;
        let w = state.store.writer();
        let closures: Vec<(NodeId, u64, u64)> = state.with_history(|h| h.closures().collect());
        let mut cuts: HashMap<NodeId, u64> = HashMap::new();
        for (feed, version, last_seq) in closures {
            if let Some(cut) = self.first_closed(&feed, version, last_seq)? {
                let c = cuts.entry(feed).or_insert(cut);
                *c = (*c).min(cut);
            }
        }
        let mut dropped = 0;
        let mut batch = WriteBatch::default();
        for (feed, cut) in &cuts {
            let head = state.store.head(feed)?;
            let keep = match cut - 1 {
                0 => Head::EMPTY,
                seq => match state.store.entry(feed, seq)? {
                    Some((hash, bytes)) => Head {
                        seq,
                        hash,
                        stamp: stored_stamp(feed, seq, &bytes)?,
                    },
                    None => continue,
                },
            };
            state
                .store
                .truncate_feed(&mut batch, feed, *cut, head.seq, keep);
            warn!(target: "huitong::audit", %feed, from = cut, to = head.seq, "dropping entries past a feed closure of the charter; rebuilding the views");
            state.reject("past_closure");
            dropped += head.seq - cut + 1;
        }
        if dropped > 0 {
            // The truncation and the marker commit together: a crash before the rebuild ends
            // leaves the marker, and the next start rebuilds.
            state.store.put_meta(&mut batch, REBUILD_MARKER, &[1]);
            state.store.commit(&w, batch, true)?;
        }
        if dropped > 0 || state.store.meta(REBUILD_MARKER)?.is_some() {
            self.rebuild_views(&w)?;
        }
        Ok(dropped)
    }

    /// The first seq after `last_seq` of `feed` held here that names a version before
    /// `version` (the closing one): from there on, the feed is refused. Entries naming
    /// `version` or later were judged with the closure known, and versions never go back
    /// within a feed, so the scan stops at the first of them.
    fn first_closed(
        &self,
        feed: &NodeId,
        version: u64,
        last_seq: u64,
    ) -> Result<Option<u64>, StoreError> {
        let head = self.state.store.head(feed)?;
        let mut seq = last_seq.saturating_add(1);
        while seq <= head.seq {
            let Some(e) = self.stored_entry(feed, seq)? else {
                return Ok(Some(seq));
            };
            if e.charter >= version {
                return Ok(None);
            }
            if self
                .state
                .with_history(|h| h.judge(feed, seq, e.charter).is_err())
            {
                return Ok(Some(seq));
            }
            seq += 1;
        }
        Ok(None)
    }

    /// Clears every view and applies every stored entry again, feed by feed, one commit per
    /// entry (a view reads what the entries before it wrote). Entries were verified when they
    /// were stored, so their signatures are not checked again.
    fn rebuild_views(&self, w: &Writer<'_>) -> Result<(), StoreError> {
        let state = &*self.state;
        let mut batch = WriteBatch::default();
        for view in &self.views {
            view.reset(state, &mut batch)?;
        }
        state.store.commit(w, batch, false)?;
        let mut replayed = 0u64;
        for (feed, head) in state.store.heads()? {
            for seq in 1..=head.seq {
                let Some((hash, bytes)) = state.store.entry(&feed, seq)? else {
                    warn!(%feed, seq, "an entry below the head is missing; the views stop there");
                    break;
                };
                let v =
                    VerifiedEntry::from_stored(&bytes, hash).map_err(|e| StoreError::Corrupt {
                        cf: crate::store::CF_ENTRIES,
                        detail: format!("entry {seq} of feed {feed}: {e}"),
                    })?;
                let signer = state.with_history(|h| {
                    h.judge(&feed, seq, v.entry.charter).map(|m| Signer {
                        uscc: m.uscc.to_string(),
                        role: m.role,
                    })
                });
                let signer = match signer {
                    Ok(s) => s,
                    Err(refusal) => {
                        warn!(%feed, seq, %refusal, "a stored entry is refused by the charter history; the views stop there");
                        break;
                    }
                };
                let mut batch = WriteBatch::default();
                self.apply_views(&mut batch, &v, &signer)?;
                state.store.commit(w, batch, false)?;
                replayed += 1;
            }
        }
        let mut batch = WriteBatch::default();
        state.store.delete_meta(&mut batch, REBUILD_MARKER);
        state.store.commit(w, batch, true)?;
        info!(entries = replayed, "views rebuilt from the feeds");
        Ok(())
    }
}
