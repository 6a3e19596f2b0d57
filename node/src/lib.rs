//! The huitong node: store, network, feeds, catalogue, admin API and CLI.
//!
//! The top-level modules depend on each other one way, with no cycles (`.ci/moddeps.py` checks
//! it in CI). Lowest first; a module names only modules listed before it:
//!
//! 1. Leaves: [`durable`], [`partial`], [`outfile`], [`stats`], [`faults`],
//!    [`supervise`], [`catchup`], [`logfile`], [`seen`], [`store`], [`plain_http`],
//!    [`error_chain`].
//! 2. [`chunks`] (the chunk store: files, and small chunks as rows of the store);
//!    [`backup`] (a store checkpoint with the catch-up mark, copying a node directory);
//!    [`audit_log`]: the audit log's files and in-memory state, held by the state;
//!    [`call_log`]: the hash-chained log of API service calls, held by the state.
//! 3. [`state`] (`NodeState`), then [`charter`] (accepting charter versions) and [`accounts`]
//!    (the people who sign in, their sessions, sign-in throttling).
//! 4. [`feeds`]: append and ingest; the [`feeds::View`] trait the views implement.
//! 5. Views over the feeds, each registered by the daemon: [`catalogue`]; [`dataset`] (version
//!    records, publishing, export) and [`receipts`], which read the catalogue; [`applications`];
//!    [`audit`] (the audit queue, checkpoints, omissions, the hub's answers), which logs the
//!    applications view's judgements.
//! 6. [`access`]: the one access-policy decision.
//! 7. [`net`] (one actor owns the Swarm; audit gossip is judged through [`net::AuditGossip`]),
//!    then [`link`] (one request/response on a data stream, framing).
//! 8. Actors and services: [`service`] (API services: calls made and answered), [`transfer`]
//!    (which answers calls with [`service`]), [`agent`], [`auditor`] (the audit services),
//!    [`housekeeping`] (chunk-store collection, expiry of waiting grant events), [`notify`]
//!    (webhook notifications).
//! 9. The admin API: [`api`] (typed requests and responses), [`http`] (the server), [`client`]
//!    (the CLI's client), [`daemon`] (wires everything together).
//! 10. [`cli`]. The binary (`main.rs`) only parses arguments, sets up logging and lets client
//!     commands end quietly on a closed pipe ([`cli::die_quietly_on_closed_pipe`]).
#![deny(unreachable_pub)]

pub mod access;
pub mod accounts;
pub mod agent;
pub mod api;
pub mod applications;
pub mod audit;
pub mod audit_log;
pub mod auditor;
pub mod backup;
pub mod call_anchors;
pub mod call_log;
pub mod call_stats;
pub mod catalogue;
pub mod catchup;
pub mod charter;
pub mod chunks;
pub mod cli;
pub mod client;
pub mod clock;
pub mod collect;
pub mod daemon;
pub mod dataset;
pub mod dbconn;
pub mod dirlock;
pub mod durable;
pub mod error_chain;
pub mod faults;
pub mod feeds;
pub mod housekeeping;
pub mod http;
pub mod link;
pub mod logfile;
pub mod net;
pub mod notify;
pub mod outfile;
pub mod partial;
pub mod per_key;
pub mod plain_http;
pub mod receipts;
pub mod secrets;
pub mod seen;
pub mod service;
pub mod stamped;
pub mod state;
pub mod stats;
pub mod store;
pub mod subscribe;
pub mod supervise;
pub mod transfer;
