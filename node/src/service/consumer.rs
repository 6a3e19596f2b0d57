//! The consumer side of a call: a department system asked this node's gateway; find the
//! service in the catalogue, present this node's own grant for it (if it holds one), send the
//! query to the provider's node, check the signed answer (or signed refusal) against the query,
//! and log the call — answered, refused or failed — with the envelope kept as proof.

use std::sync::Arc;
use std::time::{Duration, Instant};

use huitong_protocol::call::{
    Answer, Outcome, Query, SignedAnswer, MAX_ANSWER_BYTES, MAX_REFUSAL_CHARS,
};
use huitong_protocol::catalogue::ShareMode;
use huitong_protocol::grant as grants;
use huitong_protocol::wire::{DataRequest, DataResponse, RefusalKind};
use huitong_protocol::{NodeId, ResourceCode};

use super::provider::{NoAnswer, Services};
use crate::applications;
use crate::call_log::{NewCall, Side, Status};
use crate::catalogue;
use crate::link::{frame, open_stream, Transport};
use crate::state::NodeState;

/// The longest a call waits for the provider (connecting and waiting its turn included).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Calls in flight at once to one provider: half of the streams a provider allows one member
/// (`transfer::limits::MAX_STREAMS_PER_PEER`), leaving the rest to this node's pulls. More
/// calls wait their turn (within [`CALL_TIMEOUT`]). (Measured in `docs/benchmarks.md`: 32
/// gave 3–4 % more calls a second than 16 in the same runs and a p99 40–60 % longer; 8 and
/// 4 fewer calls and a longer p99.)
pub const AT_ONCE_PER_PROVIDER: usize = 16;

/// One provider's lane: turns for calls in flight, and the data streams between calls (the
/// provider answers request after request on one stream, so a call needs no new stream).
struct Lane {
    turns: Arc<tokio::sync::Semaphore>,
    idle: std::sync::Mutex<Vec<libp2p::Stream>>,
}

/// This node's calls in flight, per provider, and the grant tokens it presents.
#[derive(Default)]
pub struct Outbound {
    lanes: std::sync::Mutex<std::collections::HashMap<NodeId, Arc<Lane>>>,
    /// The assembled token of each grant (application id → hub token, provider block, token).
    /// Assembling signs a new block with a fresh key, so a token assembled per call would cost
    /// a signature here and the provider three verifications and a datalog run each time (its
    /// caches are keyed by the token's bytes); assembled once, the provider's caches hold.
    tokens: std::sync::Mutex<std::collections::HashMap<String, Assembled>>,
    /// This node's grant for each (provider, resource), looked up at most every [`FRESH`]:
    /// finding it reads every application this node knows of.
    grants: Fresh<(NodeId, String), Option<applications::AppRecord>>,
    /// The catalogue record of each (provider's USCC, resource) called, read at most every
    /// [`FRESH`] (the provider decides every call on its own record, withdrawal included).
    records: Fresh<(String, String), catalogue::Record>,
}

/// How long a grant or a catalogue record looked up for calls is used before it is looked up
/// again. A revocation is enforced by the provider on the next call whatever this node
/// presents; a new grant is presented at most this much later.
const FRESH: Duration = Duration::from_secs(2);

/// Values looked up for calls, each used for at most [`FRESH`]; at most [`KEPT_TOKENS`] keys.
struct Fresh<K, V>(std::sync::Mutex<std::collections::HashMap<K, (Instant, V)>>);

impl<K, V> Default for Fresh<K, V> {
    fn default() -> Self {
        Self(std::sync::Mutex::default())
    }
}

impl<K: std::hash::Hash + Eq, V: Clone> Fresh<K, V> {
    /// The value of `key`, looked up with `look` when it is not held or older than [`FRESH`]
    /// (a failed look-up is not kept).
    fn get<E>(&self, key: K, look: impl FnOnce() -> Result<V, E>) -> Result<V, E> {
        {
            let all = self.0.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((at, v)) = all.get(&key) {
                if at.elapsed() < FRESH {
                    return Ok(v.clone());
                }
            }
        }
        let found = look()?;
        let mut all = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if all.len() >= KEPT_TOKENS {
            all.clear();
        }
        all.insert(key, (Instant::now(), found.clone()));
        Ok(found)
    }

    fn forget(&self, key: &K) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

/// A grant's hub token and provider block, and the token assembled from them.
type Assembled = (Vec<u8>, Vec<u8>, Vec<u8>);

/// Grant tokens kept assembled.
const KEPT_TOKENS: usize = 1024;

impl Outbound {
    /// This node's grant for `code` of `provider`, looked up at most every [`FRESH`].
    fn grant(
        &self,
        state: &NodeState,
        provider: &NodeId,
        code: &str,
    ) -> Result<Option<applications::AppRecord>, crate::store::StoreError> {
        self.grants.get((*provider, code.to_string()), || {
            applications::grant_for(state, &state.id(), provider, code)
        })
    }

    /// The catalogue record of `code` of `provider` (USCC), read at most every [`FRESH`].
    fn record(
        &self,
        state: &NodeState,
        provider: &str,
        code: &str,
    ) -> Result<catalogue::Record, catalogue::PickError> {
        self.records
            .get((provider.to_string(), code.to_string()), || {
                catalogue::pick(&state.store, code, Some(provider), false)
            })
    }

    /// The token to present for grant `r`, assembled once.
    fn token(&self, r: &applications::AppRecord) -> Result<Vec<u8>, grants::GrantError> {
        let mut all = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((t, b, token)) = all.get(&r.app.id) {
            if *t == r.token && *b == r.block {
                return Ok(token.clone());
            }
        }
        let token = grants::assemble(&r.token, &r.block)?;
        if all.len() >= KEPT_TOKENS {
            all.clear();
        }
        all.insert(
            r.app.id.clone(),
            (r.token.clone(), r.block.clone(), token.clone()),
        );
        Ok(token)
    }

    /// Forgets the grant looked up for `code` of `provider` (the provider refused what it was
    /// shown: the next call looks again).
    fn forget_grant(&self, provider: &NodeId, code: &str) {
        self.grants.forget(&(*provider, code.to_string()));
    }

    fn lane(&self, provider: &NodeId) -> Arc<Lane> {
        self.lanes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(*provider)
            .or_insert_with(|| {
                Arc::new(Lane {
                    turns: Arc::new(tokio::sync::Semaphore::new(AT_ONCE_PER_PROVIDER)),
                    idle: std::sync::Mutex::default(),
                })
            })
            .clone()
    }
}

impl Lane {
    fn take(&self) -> Option<libp2p::Stream> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    fn keep(&self, s: libp2p::Stream) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < AT_ONCE_PER_PROVIDER {
            idle.push(s);
        }
    }
}

/// Why a call got no answer. Each says what was wrong and what to do.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The query is malformed, or the resource is not a service.
    #[error("{0}")]
    Invalid(String),
    /// No such resource or provider in the catalogue.
    #[error("{0}")]
    NotFound(String),
    /// The provider refused the call.
    #[error("the provider refused the call: {message}")]
    Refused {
        /// Why, as the provider says.
        kind: RefusalKind,
        /// The provider's message.
        message: String,
        /// The provider's signed refusal (absent from older providers).
        signed: Option<Signed>,
    },
    /// Over this node's quota at the provider: try again after `retry_after`.
    #[error("the provider's quota: {message}")]
    Throttled {
        /// When a call would pass.
        retry_after: Duration,
        /// What was exceeded.
        message: String,
        /// The provider's signed refusal (absent from older providers).
        signed: Option<Signed>,
    },
    /// The provider could not be reached or did not answer in time.
    #[error("the provider's node did not answer: {0}")]
    Unreachable(String),
    /// This node takes no calls yet (restored, catching up on its own feed).
    #[error("{0}")]
    NotReady(String),
    /// The answer did not verify or does not answer this query.
    #[error("the provider's answer was refused: {0}")]
    BadAnswer(String),
    /// This node failed.
    #[error("this node failed: {0}")]
    Local(String),
}

/// A refusal's proof: the call's id and the provider's signed refusal (an answer envelope whose
/// outcome is a refusal), verified and kept in the call log.
#[derive(Clone, Debug)]
pub struct Signed {
    /// The call's id (both nodes' call logs).
    pub id: String,
    /// The envelope bytes.
    pub envelope: Vec<u8>,
}

/// A verified answer and its envelope (the provider's signed word).
pub struct Called {
    /// The answer.
    pub answer: Answer,
    /// The envelope bytes.
    pub envelope: Vec<u8>,
}

/// Which service: the provider's USCC and the resource code.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// The provider's USCC.
    pub provider: &'a str,
    /// The resource code.
    pub code: &'a str,
}

/// Calls service `to` with `query` for gateway client `client`. A call to this node's own
/// service is answered here by `services`, as its owner (no grant, no network).
pub async fn call(
    state: &Arc<NodeState>,
    (t, outbound): (&Transport, &Outbound),
    services: &Arc<Services>,
    to: Target<'_>,
    query: Query,
    client: &str,
) -> Result<Called, CallError> {
    let Target { provider, code } = to;
    crate::call_anchors::ready(state).map_err(CallError::NotReady)?;
    query
        .check()
        .map_err(|e| CallError::Invalid(e.to_string()))?;
    ResourceCode::parse(code)
        .map_err(|e| CallError::Invalid(format!("resource code {code:?}: {e}")))?;
    let record = outbound
        .record(state, provider, code)
        .map_err(|e| match e {
            catalogue::PickError::Store(e) => CallError::Local(e.to_string()),
            other => CallError::NotFound(other.to_string()),
        })?;
    if record.entry.share_mode != ShareMode::Api {
        return Err(CallError::Invalid(format!(
            "{code} of {provider} is shared as {}, not as a service (接口): pull it with `huitong pull`",
            record.entry.share_mode.label()
        )));
    }
    let me = state.id();
    let grant = outbound
        .grant(state, &record.feed, code)
        .map_err(|e| CallError::Local(e.to_string()))?;
    let grant_id = grant.as_ref().map(|r| r.app.id.clone());
    let token = grant
        .map(|r| outbound.token(&r))
        .transpose()
        .map_err(|e| CallError::Local(e.to_string()))?;
    let started = Instant::now();
    let result = if record.feed == me {
        own(state, services, &record, &query).await
    } else {
        let lane = outbound.lane(&record.feed);
        let asked = async {
            let _turn = lane
                .turns
                .acquire()
                .await
                .map_err(|e| CallError::Local(e.to_string()))?;
            ask(t, &lane, &record.feed, &record.entry.code, token, &query).await
        };
        tokio::time::timeout(CALL_TIMEOUT, asked)
            .await
            .unwrap_or_else(|_| {
                Err(CallError::Unreachable(format!(
                    "no answer within {} s (is the provider's node running and reachable?)",
                    CALL_TIMEOUT.as_secs()
                )))
            })
    };
    let result = result.and_then(|reply| {
        let checked = checked(state, &record, &query, reply.bytes);
        reply.said.judge(checked)
    });
    // The provider's signed word, kept in the log: an answer, or a refusal.
    let (id, hash, envelope) = match &result {
        Ok((opened, bytes)) => (
            Some(opened.answer.id.clone()),
            Some(opened.hash),
            Some(bytes.clone()),
        ),
        Err(_) => (None, None, None),
    };
    let result = result.and_then(refusal_of);
    // The grant presented (or none) was not valid for the provider: look it up again next
    // time. Refusals of what the system asked (a 信息项 outside the grant, 核验 only) keep it.
    if let Err(CallError::Refused {
        kind: RefusalKind::NeedsGrant,
        message,
        ..
    }) = &result
    {
        let stale = grant_id.is_none()
            || [
                "revoked",
                "expired",
                "no record",
                "not granted",
                "another provider",
            ]
            .iter()
            .any(|w| message.contains(w));
        if stale {
            outbound.forget_grant(&record.feed, code);
        }
    }
    let (status, detail) = match &result {
        Ok(_) => (Status::Ok, None),
        Err(CallError::Refused { message, .. } | CallError::Throttled { message, .. }) => {
            (Status::Refused, Some(message.clone()))
        }
        Err(e) => (Status::Failed, Some(e.to_string())),
    };
    state
        .calls
        .append(
            &state.store,
            NewCall {
                side: Side::Consumer,
                peer: record.feed,
                code: code.to_string(),
                kind: query.kind(),
                // The grant this node presented (the provider's answer names its own view).
                grant: grant_id,
                id,
                query: query.hash(),
                answer: hash,
                status,
                detail,
                duration: started.elapsed(),
                client: Some(client.to_string()),
                envelope,
            },
        )
        .map_err(|e| CallError::Local(format!("cannot log the call: {e}")))?;
    let (opened, envelope) = result?;
    Ok(Called {
        answer: opened.answer,
        envelope,
    })
}

/// The provider's signed word (answer or refusal) opened and checked against the call: signed by
/// the provider, to this node, for this resource and query, shaped as an answer to it, and with
/// an id this node does not use yet.
fn checked(
    state: &NodeState,
    record: &catalogue::Record,
    query: &Query,
    bytes: Vec<u8>,
) -> Result<(SignedAnswer, Vec<u8>), CallError> {
    let me = state.id();
    let opened = SignedAnswer::open(&bytes).map_err(|e| CallError::BadAnswer(e.to_string()))?;
    let a = &opened.answer;
    if a.provider != record.feed
        || a.consumer != me
        || a.code != record.entry.code
        || a.query != query.hash()
    {
        return Err(CallError::BadAnswer(
            "it does not answer this node's query to this provider".into(),
        ));
    }
    shape(query, a).map_err(|why| CallError::BadAnswer(why.into()))?;
    // An id this node already holds (a call's, or an application's) would make `audit verify
    // --record` prove another thing than the caller means.
    let taken = crate::call_log::find(&state.store, &a.id)
        .map_err(|e| CallError::Local(e.to_string()))?
        .is_some_and(|r| !(record.feed == me && r.side == crate::call_log::Side::Provider))
        || applications::get(state, &a.id)
            .map_err(|e| CallError::Local(e.to_string()))?
            .is_some();
    if taken {
        return Err(CallError::BadAnswer(format!(
            "its id {} is already used on this node",
            a.id
        )));
    }
    Ok((opened, bytes))
}

/// What the provider sent for a call: the signed envelope, and what its response said it is.
struct Reply {
    bytes: Vec<u8>,
    said: Said,
}

/// What a provider's response said, beside the signed envelope it carried.
enum Said {
    /// An answer.
    Answer,
    /// A refusal (the words as cleaned for people).
    Refused(RefusalKind, String),
    /// Over a quota.
    Throttled(Duration, String),
}

impl Said {
    /// The checked envelope, if it says what the response said (an answer in an answer, a
    /// refusal of the same kind in a refusal); a signed refusal that fails its checks is still
    /// the refusal the response says, without proof, and says why.
    fn judge(
        self,
        checked: Result<(SignedAnswer, Vec<u8>), CallError>,
    ) -> Result<(SignedAnswer, Vec<u8>), CallError> {
        let unproved = |e: CallError| format!("its signed refusal was not accepted: {e}");
        match (self, checked) {
            (said, Ok(ok)) => {
                let agree = match (&said, &ok.0.answer.outcome) {
                    (Said::Refused(kind, _), Outcome::Refused { kind: signed, .. }) => {
                        kind == signed
                    }
                    (Said::Throttled(..), Outcome::Throttled { .. }) => true,
                    (Said::Answer, o) => {
                        !matches!(o, Outcome::Refused { .. } | Outcome::Throttled { .. })
                    }
                    _ => false,
                };
                if agree {
                    Ok(ok)
                } else {
                    Err(CallError::BadAnswer(
                        "its signed word says another thing than its response".into(),
                    ))
                }
            }
            (Said::Answer, Err(e)) => Err(e),
            (Said::Refused(kind, message), Err(e)) => Err(CallError::Refused {
                kind,
                message: format!("{message} ({})", unproved(e)),
                signed: None,
            }),
            (Said::Throttled(retry_after, message), Err(e)) => Err(CallError::Throttled {
                retry_after,
                message: format!("{message} ({})", unproved(e)),
                signed: None,
            }),
        }
    }
}

/// A signed answer that is a refusal, as the error it is (with its proof); any other answer as
/// it is.
fn refusal_of(
    (opened, bytes): (SignedAnswer, Vec<u8>),
) -> Result<(SignedAnswer, Vec<u8>), CallError> {
    let signed = || {
        Some(Signed {
            id: opened.answer.id.clone(),
            envelope: bytes.clone(),
        })
    };
    let clean = |m: &str| crate::dataset::preview::clean_message(m, MAX_MESSAGE);
    match &opened.answer.outcome {
        Outcome::Refused { kind, message } => Err(CallError::Refused {
            kind: *kind,
            message: clean(message),
            signed: signed(),
        }),
        Outcome::Throttled {
            retry_after_ms,
            message,
        } => Err(CallError::Throttled {
            retry_after: retry_after(*retry_after_ms),
            message: clean(message),
            signed: signed(),
        }),
        _ => Ok((opened, bytes)),
    }
}

/// How long the gateway tells its systems to wait: a day at most, whatever the provider says.
fn retry_after(ms: u64) -> Duration {
    Duration::from_millis(ms.min(86_400_000))
}

/// This node's own service answers its own call (logged on its provider side as well).
async fn own(
    state: &Arc<NodeState>,
    services: &Arc<Services>,
    record: &crate::catalogue::Record,
    query: &Query,
) -> Result<Reply, CallError> {
    let me = state.id();
    super::provider::answer_async(state, services, record.clone(), me, None, query.clone())
        .await
        .map(|bytes| Reply {
            bytes,
            said: Said::Answer,
        })
        .or_else(|d| match (d.signed, d.why) {
            // A signed refusal is opened and checked like an answer.
            (Some(bytes), why) => Ok(Reply {
                bytes,
                said: match why {
                    NoAnswer::Refused((kind, message)) => Said::Refused(kind, message),
                    NoAnswer::Over(o) => Said::Throttled(o.retry_after, o.message),
                },
            }),
            (None, NoAnswer::Refused((kind, message))) => Err(CallError::Refused {
                kind,
                message,
                signed: None,
            }),
            (None, NoAnswer::Over(o)) => Err(CallError::Throttled {
                retry_after: o.retry_after,
                message: o.message,
                signed: None,
            }),
        })
}

/// Longest provider message kept (characters).
const MAX_MESSAGE: usize = 200;

/// Whether the answer has the shape of an answer to `query`: the same kind; a lookup's rows
/// hold the 信息项 asked for, at most `limit` of them, one value each; the id is 32 hex digits.
fn shape(query: &Query, a: &Answer) -> Result<(), &'static str> {
    if a.id.len() != 32 || !a.id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("its id is not 32 hex digits");
    }
    match (query, &a.outcome) {
        // A refusal answers any query.
        (_, Outcome::Refused { message, .. } | Outcome::Throttled { message, .. }) => {
            if message.chars().count() > MAX_REFUSAL_CHARS {
                return Err("its refusal's message is too long");
            }
            if a.version != 0 {
                return Err("its refusal names a dataset version");
            }
            Ok(())
        }
        (Query::Http { .. }, Outcome::Http { status, .. }) if !(200..=599).contains(status) => {
            Err("its HTTP status is not a final status (200 to 599)")
        }
        (
            Query::Http { .. },
            Outcome::Http {
                content_type: Some(t),
                ..
            },
        ) if t.len() > 128 || !t.bytes().all(|b| (b' '..=b'~').contains(&b)) => {
            Err("its media type is not at most 128 printable ASCII characters")
        }
        (Query::Verify { .. }, Outcome::Match(_)) | (Query::Http { .. }, Outcome::Http { .. }) => {
            Ok(())
        }
        (
            Query::Lookup { fields, limit, .. },
            Outcome::Rows {
                fields: got, rows, ..
            },
        ) => {
            if got != fields {
                return Err("it returns other 信息项 than were asked for");
            }
            if rows.len() > *limit as usize || rows.iter().any(|r| r.len() != fields.len()) {
                return Err("its rows do not fit the query (too many, or the wrong width)");
            }
            Ok(())
        }
        _ => Err("it answers another kind of query"),
    }
}

/// One request and its answer on `s`.
async fn exchange(s: &mut libp2p::Stream, req: &DataRequest) -> Result<DataResponse, String> {
    use futures::AsyncWriteExt as _;
    frame::write(s, req).await.map_err(|e| e.to_string())?;
    s.flush().await.map_err(|e| e.to_string())?;
    frame::read::<DataResponse, _>(s, MAX_ANSWER_BYTES + 4096)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| "the provider closed the stream".to_string())
}

/// Sends the call on one of the lane's streams (a new one when none is idle, or when an idle
/// one turns out closed by the provider), and keeps the stream for the next call.
async fn ask(
    t: &Transport,
    lane: &Lane,
    provider: &NodeId,
    code: &ResourceCode,
    token: Option<Vec<u8>>,
    query: &Query,
) -> Result<Reply, CallError> {
    let peer = crate::net::peer_id(provider)
        .ok_or_else(|| CallError::Local("the provider's key is not a valid peer id".into()))?;
    let req = DataRequest::Call {
        code: code.clone(),
        grant: token.map(serde_bytes::ByteBuf::from),
        query: query.clone(),
    };
    // A write to a proxied service is sent once, on a new stream: a failure after sending it
    // cannot tell whether the backend acted, so it is not sent again.
    let once = matches!(query, Query::Http { method, .. } if method != "GET");
    let answer = match lane.take().filter(|_| !once) {
        // An idle stream the provider may have closed meanwhile: on failure, once more anew.
        Some(mut s) => match exchange(&mut s, &req).await {
            Ok(a) => {
                lane.keep(s);
                Some(a)
            }
            Err(_) => None,
        },
        None => None,
    };
    let answer = match answer {
        Some(a) => a,
        None => {
            // A new stream; once more if it fails (a connection closing under the old one:
            // the next stream dials anew). A read, asked twice, is safe.
            let mut last = String::new();
            let mut got = None;
            for _ in 0..if once { 1 } else { 2 } {
                let attempt = async {
                    let mut s = open_stream(t, peer).await?;
                    let a = exchange(&mut s, &req).await?;
                    Ok::<_, String>((s, a))
                };
                match attempt.await {
                    Ok((s, a)) => {
                        lane.keep(s);
                        got = Some(a);
                        break;
                    }
                    Err(e) => last = e,
                }
            }
            got.ok_or(CallError::Unreachable(last))?
        }
    };
    let clean = |m: &str| crate::dataset::preview::clean_message(m, MAX_MESSAGE);
    match answer {
        DataResponse::Answer(b) => Ok(Reply {
            bytes: b.into_vec(),
            said: Said::Answer,
        }),
        // A signed refusal is opened and checked like an answer (its words are the signed ones).
        DataResponse::Refused {
            kind,
            message,
            signed: Some(b),
        } => Ok(Reply {
            bytes: b.into_vec(),
            said: Said::Refused(kind, clean(&message)),
        }),
        DataResponse::Throttled {
            retry_after_ms,
            message,
            signed: Some(b),
        } => Ok(Reply {
            bytes: b.into_vec(),
            said: Said::Throttled(retry_after(retry_after_ms), clean(&message)),
        }),
        DataResponse::Refused {
            kind,
            message,
            signed: None,
        } => Err(CallError::Refused {
            kind,
            message: crate::dataset::preview::clean_message(&message, MAX_MESSAGE),
            signed: None,
        }),
        DataResponse::Throttled {
            retry_after_ms,
            message,
            signed: None,
        } => Err(CallError::Throttled {
            retry_after: retry_after(retry_after_ms),
            message: crate::dataset::preview::clean_message(&message, MAX_MESSAGE),
            signed: None,
        }),
        _ => Err(CallError::BadAnswer("unexpected answer to a call".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use huitong_protocol::call::ANSWER_VERSION;
    use huitong_protocol::SecretKey;

    /// An envelope signed by a provider with `outcome`, opened.
    fn signed(outcome: Outcome) -> (SignedAnswer, Vec<u8>) {
        let key = SecretKey::from_bytes([3; 32]);
        let bytes = Answer {
            layout: ANSWER_VERSION,
            id: "0".repeat(32),
            provider: key.public(),
            consumer: NodeId([4; 32]),
            code: ResourceCode::parse("301001/000051").unwrap(),
            version: 0,
            query: [0; 32],
            grant: None,
            outcome,
            signed_at_ms: 1,
        }
        .seal(&key);
        (SignedAnswer::open(&bytes).unwrap(), bytes)
    }

    fn refused(kind: RefusalKind) -> Outcome {
        Outcome::Refused {
            kind,
            message: "apply first".into(),
        }
    }

    fn said_refused(kind: RefusalKind) -> Said {
        Said::Refused(kind, "apply first".into())
    }

    #[test]
    fn a_signed_word_must_say_what_the_response_said() {
        let kind = RefusalKind::NeedsGrant;
        assert!(said_refused(kind).judge(Ok(signed(refused(kind)))).is_ok());
        let throttled = Outcome::Throttled {
            retry_after_ms: 1000,
            message: "slow down".into(),
        };
        let throttled_said = || Said::Throttled(Duration::from_secs(1), "slow down".into());
        assert!(throttled_said()
            .judge(Ok(signed(throttled.clone())))
            .is_ok());
        assert!(Said::Answer.judge(Ok(signed(Outcome::Match(true)))).is_ok());
        // Another kind of refusal, an answer inside a refusal, a refusal inside an answer.
        for (said, outcome) in [
            (said_refused(kind), refused(RefusalKind::NotShared)),
            (said_refused(kind), Outcome::Match(true)),
            (Said::Answer, refused(kind)),
            (Said::Answer, throttled.clone()),
            (throttled_said(), refused(kind)),
        ] {
            assert!(
                matches!(
                    said.judge(Ok(signed(outcome))),
                    Err(CallError::BadAnswer(_))
                ),
                "a response and its signed word disagree"
            );
        }
    }

    #[test]
    fn a_signed_refusal_that_fails_its_checks_is_still_the_refusal_without_proof() {
        let bad = || CallError::BadAnswer("its id is not 32 hex digits".into());
        match said_refused(RefusalKind::NeedsGrant).judge(Err(bad())) {
            Err(CallError::Refused {
                kind: RefusalKind::NeedsGrant,
                message,
                signed: None,
            }) => assert!(
                message.starts_with("apply first") && message.contains("not accepted"),
                "{message}"
            ),
            other => panic!("{:?}", other.err()),
        }
        match Said::Throttled(Duration::from_secs(7), "slow down".into()).judge(Err(bad())) {
            Err(CallError::Throttled {
                retry_after,
                signed: None,
                ..
            }) => assert_eq!(retry_after, Duration::from_secs(7)),
            other => panic!("{:?}", other.err()),
        }
        // An answer that fails its checks stays the error it is.
        assert!(matches!(
            Said::Answer.judge(Err(bad())),
            Err(CallError::BadAnswer(_))
        ));
    }
}
