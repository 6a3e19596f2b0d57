//! Grants (授权) for 有条件共享 resources as biscuit tokens.
//!
//! - The hub mints the **authority block** with the federation's platform key (the hub's node
//!   key, listed in the charter): `grant(id)`, `resource(code)`, `provider(node key hex)`,
//!   `consumer(node key hex)`, one `field(name)` per granted 信息项, `expires(unix seconds)`,
//!   and two checks: the request time is before the expiry, and the provider's approval of this
//!   grant is present in a block signed by the provider's key
//!   (`approved(id) trusting ed25519/<provider>`).
//! - The provider appends its approval as a **third-party block**, signed with its node key over
//!   the authority block's signature: `approved(id)` and checks that restrict every request to
//!   the scope **it** approved (resource, serving node, consumer, 信息项, expiry), so a token the
//!   hub minted wider than the approval is still held to the approval.
//! - The serving provider **authorizes** every request offline: the token must verify under the
//!   platform key, name the serving node as provider (and carry that node's own approval), name
//!   the requesting node as consumer and the requested resource, grant the requested column and
//!   be unexpired. The revocation and approval checks against the applications view are the
//!   node's (see the node's `access` module).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{NodeId, SecretKey};
use biscuit_auth::builder::{Algorithm, AuthorizerBuilder, BlockBuilder};
use biscuit_auth::datalog::RunLimits;
use biscuit_auth::{Biscuit, KeyPair, PrivateKey, PublicKey, UnverifiedBiscuit};

/// Longest datalog run for one request's authorization. Every rule and check run comes from the
/// platform's block, the provider's own block and the authorizer (a token with any other block
/// is refused before the datalog), so this is a guard, not a defence against hostile tokens. It
/// is wall-clock time: it must not trip when a loaded machine preempts the thread (a run takes
/// about 0.1 ms of CPU in release builds).
const AUTHORIZE_LIMIT: Duration = Duration::from_secs(1);

/// Blocks in a token a provider serves: the hub's authority block and the provider's approval.
const SERVED_BLOCKS: usize = 2;

/// Why a grant could not be made or was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GrantError {
    /// The token is malformed or its signatures do not verify under the platform key.
    #[error("the grant token does not verify under the platform key: {0}")]
    Token(String),
    /// The token verified but does not allow this request.
    #[error("the grant does not allow this request: {0}")]
    Denied(String),
}

/// What a grant allows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantFacts {
    /// Grant (application) id.
    pub id: String,
    /// Resource code.
    pub code: String,
    /// The provider node whose resource it is (and who approved it).
    pub provider: NodeId,
    /// The consumer node allowed to use it.
    pub consumer: NodeId,
    /// Granted 信息项.
    pub fields: Vec<String>,
    /// Expiry, seconds since the Unix epoch.
    pub expires: u64,
}

impl GrantFacts {
    /// Why this (minted) scope is not within `approved`, or `None` when it is: same grant,
    /// resource, provider and consumer, no 信息项 beyond the approved ones, no later expiry.
    pub fn exceeds(&self, approved: &GrantFacts) -> Option<String> {
        let mut why = Vec::new();
        if self.id != approved.id {
            why.push(format!("grant {} instead of {}", self.id, approved.id));
        }
        if self.code != approved.code {
            why.push(format!(
                "resource {} instead of {}",
                self.code, approved.code
            ));
        }
        if self.provider != approved.provider {
            why.push(format!(
                "provider {} instead of {}",
                self.provider, approved.provider
            ));
        }
        if self.consumer != approved.consumer {
            why.push(format!(
                "consumer {} instead of {}",
                self.consumer, approved.consumer
            ));
        }
        let extra: Vec<&str> = self
            .fields
            .iter()
            .filter(|f| !approved.fields.contains(f))
            .map(String::as_str)
            .collect();
        if !extra.is_empty() {
            why.push(format!("信息项 {extra:?} were not approved"));
        }
        if self.expires > approved.expires {
            why.push(format!(
                "expires at {} (unix s), after the approved {}",
                self.expires, approved.expires
            ));
        }
        (!why.is_empty()).then(|| why.join("; "))
    }
}

/// A request to authorize.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The node asking.
    pub requester: &'a NodeId,
    /// The node serving (whose resource, and whose approval, the grant must carry).
    pub provider: &'a NodeId,
    /// The resource asked for.
    pub code: &'a str,
    /// The column asked for (a chunk of a table column), if any.
    pub column: Option<&'a str>,
    /// Now, seconds since the Unix epoch.
    pub now: u64,
}

fn private(key: &SecretKey) -> Result<PrivateKey, GrantError> {
    PrivateKey::from_bytes(&key.to_bytes(), Algorithm::Ed25519)
        .map_err(|e| GrantError::Token(e.to_string()))
}

fn public(key: &NodeId) -> Result<PublicKey, GrantError> {
    PublicKey::from_bytes(&key.0, Algorithm::Ed25519).map_err(|e| GrantError::Token(e.to_string()))
}

fn token_err(e: impl std::fmt::Display) -> GrantError {
    GrantError::Token(e.to_string())
}

/// Datalog string literal (names and codes are checked text, but quote them safely anyway).
fn lit(s: &str) -> String {
    format!("{s:?}")
}

/// A datalog set literal of strings.
fn set(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|s| lit(s)).collect();
    format!("{{{}}}", inner.join(", "))
}

/// Mints the authority block (the hub, with the platform key).
pub fn mint(platform: &SecretKey, g: &GrantFacts) -> Result<Vec<u8>, GrantError> {
    let mut b = Biscuit::builder()
        .fact(format!("grant({})", lit(&g.id)).as_str())
        .map_err(token_err)?
        .fact(format!("resource({})", lit(&g.code)).as_str())
        .map_err(token_err)?
        .fact(format!("provider({})", lit(&g.provider.to_hex())).as_str())
        .map_err(token_err)?
        .fact(format!("consumer({})", lit(&g.consumer.to_hex())).as_str())
        .map_err(token_err)?
        .fact(format!("expires({})", g.expires).as_str())
        .map_err(token_err)?
        .check(format!("check if time($t), $t <= {}", g.expires).as_str())
        .map_err(token_err)?
        .check(
            format!(
                "check if approved({}) trusting ed25519/{}",
                lit(&g.id),
                g.provider.to_hex()
            )
            .as_str(),
        )
        .map_err(token_err)?;
    for f in &g.fields {
        b = b
            .fact(format!("field({})", lit(f)).as_str())
            .map_err(token_err)?;
    }
    let root = KeyPair::from(&private(platform)?);
    b.build(&root)
        .map_err(token_err)?
        .to_vec()
        .map_err(token_err)
}

/// The scope the hub minted into `token`'s authority block, checked under the platform key
/// (信息项 sorted).
pub fn inspect(token: &[u8], platform: &NodeId) -> Result<GrantFacts, GrantError> {
    let biscuit = Biscuit::from(token, public(platform)?).map_err(token_err)?;
    if biscuit.block_count() != 1 {
        return Err(GrantError::Token(
            "an issued token must hold the authority block only".into(),
        ));
    }
    // Run once per grant (before endorsing), not per request: a generous time limit.
    let mut a = AuthorizerBuilder::new()
        .set_limits(RunLimits {
            max_time: Duration::from_secs(2),
            ..Default::default()
        })
        .build(&biscuit)
        .map_err(token_err)?;
    let one = |a: &mut biscuit_auth::Authorizer, rule: &str| -> Result<String, GrantError> {
        let v: Vec<(String,)> = a.query(rule).map_err(token_err)?;
        match v.as_slice() {
            [(x,)] => Ok(x.clone()),
            _ => Err(GrantError::Token(format!(
                "the token must hold exactly one fact for `{rule}`"
            ))),
        }
    };
    let id = one(&mut a, "data($x) <- grant($x)")?;
    let code = one(&mut a, "data($x) <- resource($x)")?;
    let key = |hex: String| NodeId::from_hex(&hex).map_err(|e| GrantError::Token(e.to_string()));
    let provider = key(one(&mut a, "data($x) <- provider($x)")?)?;
    let consumer = key(one(&mut a, "data($x) <- consumer($x)")?)?;
    let fields: Vec<(String,)> = a.query("data($x) <- field($x)").map_err(token_err)?;
    let mut fields: Vec<String> = fields.into_iter().map(|(f,)| f).collect();
    fields.sort();
    let expires: Vec<(i64,)> = a.query("data($x) <- expires($x)").map_err(token_err)?;
    let expires = match expires.as_slice() {
        [(e,)] => u64::try_from(*e).map_err(token_err)?,
        _ => return Err(GrantError::Token("the token must hold one expiry".into())),
    };
    let facts = GrantFacts {
        id,
        code,
        provider,
        consumer,
        fields,
        expires,
    };
    // Exactly what `mint` makes of these facts — no other fact, rule or check (which could
    // satisfy or defeat checks at serve time).
    let expected = Biscuit::from(
        &mint(&SecretKey::from_bytes([1; 32]), &facts)?,
        public(&SecretKey::from_bytes([1; 32]).public())?,
    )
    .and_then(|b| b.print_block_source(0))
    .map_err(token_err)?;
    let lines = |text: &str| {
        let mut l: Vec<String> = text.lines().map(|l| l.trim().to_owned()).collect();
        l.sort();
        l
    };
    if lines(&biscuit.print_block_source(0).map_err(token_err)?) != lines(&expected) {
        return Err(GrantError::Token(
            "the authority block holds more than a grant's facts and checks".into(),
        ));
    }
    Ok(facts)
}

/// The provider's approval of `approved` as a third-party block for `token`: `approved(id)`
/// and checks that hold every request to the approved scope, whatever the authority block says.
pub fn endorse(
    provider: &SecretKey,
    token: &[u8],
    approved: &GrantFacts,
) -> Result<Vec<u8>, GrantError> {
    let unverified = UnverifiedBiscuit::from(token).map_err(token_err)?;
    let request = unverified.third_party_request().map_err(token_err)?;
    // The provider endorses only a token whose authority block is exactly a grant's facts and
    // checks (see `inspect`), so no fact there can satisfy these checks.
    let checks = [
        format!("check if requested({})", lit(&approved.code)),
        format!("check if serving({})", lit(&approved.provider.to_hex())),
        format!("check if requester({})", lit(&approved.consumer.to_hex())),
        format!("check if time($t), $t <= {}", approved.expires),
        format!(
            "check if request(\"resource\") or requested_field($f), {}.contains($f)",
            set(&approved.fields)
        ),
    ];
    let mut block = BlockBuilder::new()
        .fact(format!("approved({})", lit(&approved.id)).as_str())
        .map_err(token_err)?;
    for c in &checks {
        block = block.check(c.as_str()).map_err(token_err)?;
    }
    request
        .create_block(&private(provider)?, block)
        .map_err(token_err)?
        .serialize()
        .map_err(token_err)
}

/// The token with the provider's block appended, as the consumer presents it.
pub fn assemble(token: &[u8], block: &[u8]) -> Result<Vec<u8>, GrantError> {
    UnverifiedBiscuit::from(token)
        .map_err(token_err)?
        .append_third_party(block)
        .map_err(token_err)?
        .to_vec()
        .map_err(token_err)
}

/// Authorizes `req` with `token`; returns the grant id (for the node's approval and revocation
/// checks). Verifies the token's signatures every time: a provider serving many requests with
/// one token uses a [`TokenCache`].
pub fn authorize(token: &[u8], platform: &NodeId, req: &Request<'_>) -> Result<String, GrantError> {
    let biscuit = Biscuit::from(token, public(platform)?).map_err(token_err)?;
    authorize_verified(&biscuit, req)
}

/// Refuses, before any datalog runs, a token that is not the hub's block followed by a
/// third-party block signed by `provider`: every rule run then comes from the platform and
/// the provider (which is what lets the datalog guard be generous).
fn served_shape(biscuit: &Biscuit, provider: &NodeId) -> Result<(), GrantError> {
    if biscuit.block_count() != SERVED_BLOCKS {
        return Err(GrantError::Denied(format!(
            "a grant token holds exactly two blocks, the hub's grant and the provider's approval; \
             this one holds {}: present the grant as the hub issued it and the provider endorsed it",
            biscuit.block_count()
        )));
    }
    let signer = biscuit.block_external_key(1).map_err(token_err)?;
    if signer != Some(public(provider)?) {
        return Err(GrantError::Denied(
            "the approval of the node serving is missing: the token's second block is not this \
             provider's endorsement (the grant is for another provider's resource, or was \
             approved by another provider, or not at all)"
                .into(),
        ));
    }
    Ok(())
}

/// How many verified tokens a [`TokenCache`] keeps (a few KiB each).
const CACHED_TOKENS: usize = 1024;
/// How many datalog decisions a [`TokenCache`] keeps.
const CACHED_DECISIONS: usize = 16_384;
/// How long a datalog decision is reused (seconds): a token's own expiry is honoured within
/// this; the provider's record of the application (revocation, 信息项, last day) is checked
/// by the caller on every request regardless.
pub const DECISION_SECS: u64 = 60;

/// Tokens whose signatures already verified under the platform key, so that the many requests
/// of one pull (one per chunk) verify the token's three signatures once and only run the
/// datalog. The key is the BLAKE3 hash of the platform key and the token bytes, so a cached
/// token is exactly the bytes that verified under exactly that key; the datalog (consumer,
/// provider, resource, 信息项, time, approval) runs again for a request after
/// [`DECISION_SECS`]; within them an allowed decision for the same token, requester, provider,
/// resource and 信息项 is reused (an API call reads several 信息项 per call, thousands of calls
/// a second).
#[derive(Default)]
pub struct TokenCache {
    inner: Mutex<CacheInner>,
}

#[derive(Default)]
struct CacheInner {
    /// Allowed decisions: (token, requester, provider, resource, 信息项) → (grant id, when).
    decisions: HashMap<[u8; 32], (String, u64)>,
    tokens: HashMap<[u8; 32], Arc<Biscuit>>,
    /// Insertion order, oldest first: the oldest token goes when the cache is full.
    order: VecDeque<[u8; 32]>,
}

/// A token presented under a platform key, with its [`TokenCache`] key (BLAKE3 of both) hashed
/// once: a request decided for several scopes (a call reading several 信息项) hashes its token
/// (a few KiB) once, not once per scope. The key cannot be separated from the bytes it is of.
#[derive(Clone, Copy)]
pub struct Presented<'t> {
    token: &'t [u8],
    platform: NodeId,
    key: [u8; 32],
}

impl<'t> Presented<'t> {
    /// `token` as presented to a provider whose platform key is `platform`.
    pub fn new(token: &'t [u8], platform: &NodeId) -> Self {
        let mut h = blake3::Hasher::new();
        h.update(&platform.0);
        h.update(token);
        Self {
            token,
            platform: *platform,
            key: h.finalize().into(),
        }
    }
}

impl Presented<'_> {
    /// The platform key it is presented under.
    pub fn platform(&self) -> &NodeId {
        &self.platform
    }
}

impl TokenCache {
    /// Whether `token`'s signatures have verified under `platform` here before (authorizing
    /// with it then costs a datalog run at most, no signature check).
    pub fn holds(&self, token: &Presented<'_>) -> bool {
        self.lock().tokens.contains_key(&token.key)
    }

    /// Authorizes `req` with `token` exactly as [`authorize`] does, verifying the token's
    /// signatures only the first time this cache sees it.
    pub fn authorize(
        &self,
        token: &Presented<'_>,
        req: &Request<'_>,
    ) -> Result<String, GrantError> {
        let Presented {
            token,
            platform,
            key,
        } = *token;
        let platform = &platform;
        let mut d = blake3::Hasher::new();
        d.update(&key);
        d.update(&req.requester.0);
        d.update(&req.provider.0);
        d.update(&(req.code.len() as u64).to_le_bytes());
        d.update(req.code.as_bytes());
        match req.column {
            Some(c) => d.update(&[1]).update(c.as_bytes()),
            None => d.update(&[0]),
        };
        let decision: [u8; 32] = d.finalize().into();
        if let Some((id, at)) = self.lock().decisions.get(&decision) {
            if req.now >= *at && req.now - at < DECISION_SECS {
                return Ok(id.clone());
            }
        }
        let cached = self.lock().tokens.get(&key).cloned();
        let biscuit = match cached {
            Some(b) => b,
            None => {
                // Verified outside the lock: a bad token costs only its sender's request. Only
                // a token shaped as one this provider endorsed is kept, so variants a holder
                // makes by appending blocks cannot push the honest tokens out.
                let b = Arc::new(Biscuit::from(token, public(platform)?).map_err(token_err)?);
                served_shape(&b, req.provider)?;
                let mut inner = self.lock();
                if inner.tokens.insert(key, b.clone()).is_none() {
                    inner.order.push_back(key);
                }
                while inner.order.len() > CACHED_TOKENS {
                    if let Some(old) = inner.order.pop_front() {
                        inner.tokens.remove(&old);
                    }
                }
                b
            }
        };
        let id = authorize_verified(&biscuit, req)?;
        let mut inner = self.lock();
        if inner.decisions.len() >= CACHED_DECISIONS {
            let now = req.now;
            inner
                .decisions
                .retain(|_, (_, at)| now >= *at && now - *at < DECISION_SECS);
            if inner.decisions.len() >= CACHED_DECISIONS {
                inner.decisions.clear();
            }
        }
        inner.decisions.insert(decision, (id.clone(), req.now));
        Ok(id)
    }

    /// Tokens held now.
    pub fn len(&self) -> usize {
        self.lock().tokens.len()
    }

    /// Whether no token is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        // The map is consistent after every statement: a panic elsewhere cannot corrupt it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The datalog half of [`authorize`], for a token whose signatures verified.
fn authorize_verified(biscuit: &Biscuit, req: &Request<'_>) -> Result<String, GrantError> {
    served_shape(biscuit, req.provider)?;
    let serving = req.provider.to_hex();
    let mut b = AuthorizerBuilder::new()
        .fact(format!("time({})", req.now).as_str())
        .map_err(token_err)?
        .fact(format!("requester({})", lit(&req.requester.to_hex())).as_str())
        .map_err(token_err)?
        .fact(format!("serving({})", lit(&serving)).as_str())
        .map_err(token_err)?
        .fact(format!("requested({})", lit(req.code)).as_str())
        .map_err(token_err)?
        .fact(if req.column.is_some() {
            "request(\"column\")"
        } else {
            "request(\"resource\")"
        })
        .map_err(token_err)?
        .check("check if consumer($c), requester($c)")
        .map_err(token_err)?
        .check("check if resource($r), requested($r)")
        .map_err(token_err)?
        .check("check if provider($p), serving($p)")
        .map_err(token_err)?
        .check(
            format!("check if grant($id), approved($id) trusting authority, ed25519/{serving}")
                .as_str(),
        )
        .map_err(token_err)?;
    if let Some(col) = req.column {
        b = b
            .fact(format!("requested_field({})", lit(col)).as_str())
            .map_err(token_err)?
            .check("check if requested_field($f), field($f)")
            .map_err(token_err)?;
    }
    let mut authorizer = b
        .policy("allow if true")
        .map_err(token_err)?
        .set_limits(RunLimits {
            max_time: AUTHORIZE_LIMIT,
            ..Default::default()
        })
        .build(biscuit)
        .map_err(token_err)?;
    authorizer
        .authorize()
        .map_err(|e| GrantError::Denied(describe(&e)))?;
    let ids: Vec<(String,)> = authorizer
        .query(
            format!("data($id) <- grant($id), approved($id) trusting authority, ed25519/{serving}")
                .as_str(),
        )
        .map_err(|e| GrantError::Denied(e.to_string()))?;
    match ids.as_slice() {
        [(id,)] => Ok(id.clone()),
        _ => Err(GrantError::Denied(
            "the token must name exactly one grant approved by this provider".into(),
        )),
    }
}

/// The failed checks of a refused authorization, in words.
fn describe(e: &biscuit_auth::error::Token) -> String {
    use biscuit_auth::error::{FailedCheck, Logic, Token};
    let checks = match e {
        Token::FailedLogic(Logic::Unauthorized { checks, .. }) => checks,
        other => return other.to_string(),
    };
    let texts: Vec<String> = checks
        .iter()
        .map(|c| {
            let rule = match c {
                FailedCheck::Block(b) => b.rule.clone(),
                FailedCheck::Authorizer(a) => a.rule.clone(),
            };
            if rule.contains("approved") {
                "the approval of the node serving is missing (the grant was approved by another provider, or not at all)".to_string()
            } else if rule.contains("serving") {
                "the grant is for another provider's resource".to_string()
            } else if rule.contains("requester") {
                "the token is bound to another node".to_string()
            } else if rule.contains("requested_field") {
                "the column is outside the grant".to_string()
            } else if rule.contains("requested") {
                "the token is for another resource".to_string()
            } else if rule.contains("time(") {
                "the token has expired".to_string()
            } else {
                rule
            }
        })
        .collect();
    texts.join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SecretKey {
        SecretKey::from_bytes([b; 32])
    }

    struct World {
        platform: SecretKey,
        provider: SecretKey,
        consumer: SecretKey,
        facts: GrantFacts,
    }

    fn world() -> World {
        let consumer = key(3);
        let provider = key(2);
        World {
            platform: key(1),
            facts: GrantFacts {
                id: "g1".into(),
                code: "101001/000001".into(),
                provider: provider.public(),
                consumer: consumer.public(),
                fields: vec!["姓名".into(), "性别".into()],
                expires: 2_000_000_000,
            },
            provider,
            consumer,
        }
    }

    /// Minted as `minted`, endorsed by `endorser` for the scope `approved`.
    fn token(
        w: &World,
        minted: &GrantFacts,
        endorser: &SecretKey,
        approved: &GrantFacts,
    ) -> Vec<u8> {
        let t = mint(&w.platform, minted).unwrap();
        let b = endorse(endorser, &t, approved).unwrap();
        assemble(&t, &b).unwrap()
    }

    fn full(w: &World) -> Vec<u8> {
        token(w, &w.facts, &w.provider, &w.facts)
    }

    fn req<'a>(
        who: &'a NodeId,
        provider: &'a NodeId,
        code: &'a str,
        col: Option<&'a str>,
        now: u64,
    ) -> Request<'a> {
        Request {
            requester: who,
            provider,
            code,
            column: col,
            now,
        }
    }

    #[test]
    fn granted_column_is_allowed_and_the_scope_reads_back() {
        let w = world();
        let t = full(&w);
        let (c, p) = (w.consumer.public(), w.provider.public());
        let r = req(&c, &p, "101001/000001", Some("姓名"), 1_800_000_000);
        assert_eq!(authorize(&t, &w.platform.public(), &r).unwrap(), "g1");
        let r = req(&c, &p, "101001/000001", None, 1_800_000_000);
        assert_eq!(authorize(&t, &w.platform.public(), &r).unwrap(), "g1");
        let issued = mint(&w.platform, &w.facts).unwrap();
        let mut sorted = w.facts.clone();
        sorted.fields.sort();
        assert_eq!(inspect(&issued, &w.platform.public()).unwrap(), sorted);
        assert!(inspect(&issued, &key(8).public()).is_err());
        // An endorsed token is not what the hub issues.
        assert!(inspect(&t, &w.platform.public()).is_err());
        assert_eq!(w.facts.exceeds(&w.facts), None);
    }

    #[test]
    fn every_escalation_is_refused_with_its_reason() {
        let w = world();
        let t = full(&w);
        let pk = w.platform.public();
        let (c, p) = (w.consumer.public(), w.provider.public());
        let other = key(9).public();
        let now = 1_800_000_000;
        let code = "101001/000001";
        let cases = [
            (
                authorize(&t, &pk, &req(&c, &p, code, Some("民族"), now)),
                "outside the grant",
            ),
            (
                authorize(&t, &pk, &req(&c, &p, code, Some("姓名"), 2_100_000_000)),
                "expired",
            ),
            (
                authorize(&t, &pk, &req(&other, &p, code, Some("姓名"), now)),
                "another node",
            ),
            (
                authorize(&t, &pk, &req(&c, &p, "101001/000002", Some("姓名"), now)),
                "another resource",
            ),
            // Another provider serving the same code under this grant (issue #9, point 1).
            (
                authorize(&t, &pk, &req(&c, &other, code, Some("姓名"), now)),
                "another provider",
            ),
            (
                authorize(
                    &token(&w, &w.facts, &key(7), &w.facts),
                    &pk,
                    &req(&c, &p, code, None, now),
                ),
                "approval",
            ),
            (
                authorize(&t, &key(8).public(), &req(&c, &p, code, None, now)),
                "platform key",
            ),
        ];
        for (result, want) in cases {
            let e = result.unwrap_err().to_string();
            assert!(e.contains(want), "{e} should mention {want}");
        }
        // A block appended by the holder (attenuation) is not served: every rule run comes
        // from the platform and the provider.
        let attenuated = Biscuit::from(&t, public(&pk).unwrap())
            .unwrap()
            .append(BlockBuilder::new().check("check if true").unwrap())
            .unwrap()
            .to_vec()
            .unwrap();
        let e = authorize(&attenuated, &pk, &req(&c, &p, code, None, now)).unwrap_err();
        assert!(e.to_string().contains("this one holds 3"), "{e}");
        // Without the provider's block at all.
        let bare = mint(&w.platform, &w.facts).unwrap();
        let e = authorize(&bare, &pk, &req(&c, &p, code, None, now)).unwrap_err();
        assert!(e.to_string().contains("approval"), "{e}");
    }

    /// The cache answers every request exactly as `authorize` does, holds a token once, and a
    /// token it holds is not accepted under another platform key nor with a byte changed.
    #[test]
    fn the_cache_decides_exactly_as_authorize() {
        let w = world();
        let cache = TokenCache::default();
        let t = full(&w);
        let pk = w.platform.public();
        assert!(!cache.holds(&Presented::new(&t, &pk)));
        let (c, p) = (w.consumer.public(), w.provider.public());
        let code = "101001/000001";
        let requests = [
            req(&c, &p, code, Some("姓名"), 1_800_000_000),
            req(&c, &p, code, None, 1_800_000_000),
            req(&c, &p, code, Some("民族"), 1_800_000_000),
            req(&c, &p, code, Some("姓名"), 2_100_000_000),
            req(&p, &p, code, Some("姓名"), 1_800_000_000),
            req(&c, &c, code, Some("姓名"), 1_800_000_000),
        ];
        for _ in 0..2 {
            for r in &requests {
                let plain = authorize(&t, &pk, r).map_err(|e| e.to_string());
                let cached = cache
                    .authorize(&Presented::new(&t, &pk), r)
                    .map_err(|e| e.to_string());
                assert_eq!(plain, cached, "{r:?}");
            }
        }
        assert_eq!(
            cache
                .authorize(&Presented::new(&t, &pk), &requests[0])
                .unwrap(),
            "g1"
        );
        assert_eq!(cache.len(), 1);
        let e = cache
            .authorize(&Presented::new(&t, &key(8).public()), &requests[0])
            .unwrap_err();
        assert!(e.to_string().contains("platform key"), "{e}");
        let mut bad = t.clone();
        let i = bad.len() / 2;
        bad[i] ^= 1;
        assert!(cache
            .authorize(&Presented::new(&bad, &pk), &requests[0])
            .is_err());
        assert_eq!(cache.len(), 1, "nothing that failed to verify is kept");
        assert!(cache.holds(&Presented::new(&t, &pk)));
        assert!(
            !cache.holds(&Presented::new(&bad, &pk))
                && !cache.holds(&Presented::new(&t, &key(8).public()))
        );
    }

    /// A hub that adds facts to its block (to satisfy checks at serve time) is caught by
    /// `inspect`, so the provider never endorses such a token.
    #[test]
    fn facts_the_hub_adds_are_refused_before_endorsement() {
        let w = world();
        let (c, p) = (w.consumer.public(), w.provider.public());
        let mut b = Biscuit::builder();
        for f in [
            format!("grant({})", lit(&w.facts.id)),
            format!("resource({})", lit(&w.facts.code)),
            format!("provider({})", lit(&p.to_hex())),
            format!("consumer({})", lit(&c.to_hex())),
            format!("expires({})", w.facts.expires),
            "field(\"姓名\")".into(),
            "field(\"性别\")".into(),
            "requested_field(\"民族\")".into(),
            "time(0)".into(),
        ] {
            b = b.fact(f.as_str()).unwrap();
        }
        let token = b
            .build(&KeyPair::from(&private(&w.platform).unwrap()))
            .unwrap()
            .to_vec()
            .unwrap();
        let e = inspect(&token, &w.platform.public())
            .unwrap_err()
            .to_string();
        assert!(e.contains("more than a grant"), "{e}");
        // The same facts minted properly read back.
        let t = mint(&w.platform, &w.facts).unwrap();
        assert!(inspect(&t, &w.platform.public()).is_ok());
    }

    /// A second provider that names itself in a token and approves it still cannot serve a
    /// grant the first provider approved, and a token the hub minted wider than the approval is
    /// held to the approval by the provider's block (issue #9, points 1 and 3).
    #[test]
    fn the_provider_block_holds_a_wider_token_to_the_approval() {
        let w = world();
        let pk = w.platform.public();
        let (c, p) = (w.consumer.public(), w.provider.public());
        let code = "101001/000001";
        let mut wide = w.facts.clone();
        wide.fields.push("民族".into());
        wide.expires = 2_100_000_000;
        let mut approved = w.facts.clone();
        approved.fields = vec!["姓名".into()];
        approved.expires = 1_900_000_000;
        let why = wide.exceeds(&approved).unwrap();
        assert!(
            why.contains("性别") && why.contains("民族") && why.contains("expires"),
            "{why}"
        );
        let t = token(&w, &wide, &w.provider, &approved);
        assert!(authorize(&t, &pk, &req(&c, &p, code, Some("姓名"), 1_800_000_000)).is_ok());
        for (col, now, want) in [
            (Some("民族"), 1_800_000_000, "outside the grant"),
            (Some("性别"), 1_800_000_000, "outside the grant"),
            (Some("姓名"), 1_950_000_000, "expired"),
        ] {
            let e = authorize(&t, &pk, &req(&c, &p, code, col, now))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(want),
                "{col:?} at {now}: {e} should mention {want}"
            );
        }
    }
}
