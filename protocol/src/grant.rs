//! Grants (授权) for 有条件共享 resources as biscuit tokens.
//!
//! - The hub mints the **authority block** with the federation's platform key (the hub's node
//!   key, listed in the charter): `grant(id)`, `resource(code)`, `consumer(node key hex)`, one
//!   `field(name)` per granted 信息项, `expires(unix seconds)`, and two checks: the request
//!   time is before the expiry, and the provider's approval of this grant is present in a block
//!   signed by the provider's key (`approved(id) trusting ed25519/<provider>`).
//! - The provider appends its approval as a **third-party block** (`approved(id)`), signed with
//!   its node key over the authority block's signature.
//! - The provider **authorizes** every request offline: the token must verify under the platform
//!   key, name the requesting node as consumer and the requested resource, grant the requested
//!   column, be unexpired, carry the provider's approval, and its grant must not be revoked.

use std::time::Duration;

use crate::{NodeId, SecretKey};
use biscuit_auth::builder::{Algorithm, AuthorizerBuilder, BlockBuilder};
use biscuit_auth::datalog::RunLimits;
use biscuit_auth::{Biscuit, KeyPair, PrivateKey, PublicKey, UnverifiedBiscuit};

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
    /// The consumer node allowed to use it.
    pub consumer: NodeId,
    /// Granted 信息项.
    pub fields: Vec<String>,
    /// Expiry, seconds since the Unix epoch.
    pub expires: u64,
}

/// A request to authorize.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The node asking.
    pub requester: &'a NodeId,
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

/// Mints the authority block (the hub, with the platform key).
pub fn mint(
    platform: &SecretKey,
    provider: &NodeId,
    g: &GrantFacts,
) -> Result<Vec<u8>, GrantError> {
    let mut b = Biscuit::builder()
        .fact(format!("grant({})", lit(&g.id)).as_str())
        .map_err(token_err)?
        .fact(format!("resource({})", lit(&g.code)).as_str())
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
                provider.to_hex()
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

/// The provider's approval of grant `id` as a third-party block for `token`.
pub fn endorse(provider: &SecretKey, token: &[u8], id: &str) -> Result<Vec<u8>, GrantError> {
    let unverified = UnverifiedBiscuit::from(token).map_err(token_err)?;
    let request = unverified.third_party_request().map_err(token_err)?;
    let block = BlockBuilder::new()
        .fact(format!("approved({})", lit(id)).as_str())
        .map_err(token_err)?;
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

/// Authorizes `req` with `token`; returns the grant id (for the revocation check).
pub fn authorize(token: &[u8], platform: &NodeId, req: &Request<'_>) -> Result<String, GrantError> {
    let biscuit = Biscuit::from(token, public(platform)?).map_err(token_err)?;
    let mut b = AuthorizerBuilder::new()
        .fact(format!("time({})", req.now).as_str())
        .map_err(token_err)?
        .fact(format!("requester({})", lit(&req.requester.to_hex())).as_str())
        .map_err(token_err)?
        .fact(format!("requested({})", lit(req.code)).as_str())
        .map_err(token_err)?
        .check("check if consumer($c), requester($c)")
        .map_err(token_err)?
        .check("check if resource($r), requested($r)")
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
            max_time: Duration::from_millis(50),
            ..Default::default()
        })
        .build(&biscuit)
        .map_err(token_err)?;
    authorizer
        .authorize()
        .map_err(|e| GrantError::Denied(describe(&e)))?;
    let ids: Vec<(String,)> = authorizer
        .query("data($id) <- grant($id)")
        .map_err(|e| GrantError::Denied(e.to_string()))?;
    ids.into_iter()
        .next()
        .map(|(id,)| id)
        .ok_or_else(|| GrantError::Denied("the token names no grant".into()))
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
            if rule.contains("requester") {
                "the token is bound to another node".to_string()
            } else if rule.contains("requested($r)") {
                "the token is for another resource".to_string()
            } else if rule.contains("requested_field") {
                "the column is outside the grant".to_string()
            } else if rule.contains("time(") {
                "the token has expired".to_string()
            } else if rule.contains("approved") {
                "the provider's approval is missing or not signed by the provider".to_string()
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
        World {
            platform: key(1),
            provider: key(2),
            facts: GrantFacts {
                id: "g1".into(),
                code: "101001/000001".into(),
                consumer: consumer.public(),
                fields: vec!["姓名".into(), "性别".into()],
                expires: 2_000_000_000,
            },
            consumer,
        }
    }

    fn full(w: &World, endorser: &SecretKey) -> Vec<u8> {
        let t = mint(&w.platform, &w.provider.public(), &w.facts).unwrap();
        let b = endorse(endorser, &t, &w.facts.id).unwrap();
        assemble(&t, &b).unwrap()
    }

    fn req<'a>(who: &'a NodeId, code: &'a str, col: Option<&'a str>, now: u64) -> Request<'a> {
        Request {
            requester: who,
            code,
            column: col,
            now,
        }
    }

    #[test]
    fn granted_column_is_allowed() {
        let w = world();
        let t = full(&w, &w.provider);
        let c = w.consumer.public();
        assert_eq!(
            authorize(
                &t,
                &w.platform.public(),
                &req(&c, "101001/000001", Some("姓名"), 1_800_000_000)
            )
            .unwrap(),
            "g1"
        );
    }

    #[test]
    fn every_escalation_is_refused_with_its_reason() {
        let w = world();
        let t = full(&w, &w.provider);
        let p = w.platform.public();
        let c = w.consumer.public();
        let other = key(9).public();
        let cases = [
            (
                authorize(
                    &t,
                    &p,
                    &req(&c, "101001/000001", Some("民族"), 1_800_000_000),
                ),
                "outside the grant",
            ),
            (
                authorize(
                    &t,
                    &p,
                    &req(&c, "101001/000001", Some("姓名"), 2_100_000_000),
                ),
                "expired",
            ),
            (
                authorize(
                    &t,
                    &p,
                    &req(&other, "101001/000001", Some("姓名"), 1_800_000_000),
                ),
                "another node",
            ),
            (
                authorize(
                    &t,
                    &p,
                    &req(&c, "101001/000002", Some("姓名"), 1_800_000_000),
                ),
                "another resource",
            ),
            (
                authorize(
                    &full(&w, &key(7)),
                    &p,
                    &req(&c, "101001/000001", None, 1_800_000_000),
                ),
                "approval",
            ),
            (
                authorize(
                    &t,
                    &key(8).public(),
                    &req(&c, "101001/000001", None, 1_800_000_000),
                ),
                "platform key",
            ),
        ];
        for (result, want) in cases {
            let e = result.unwrap_err().to_string();
            assert!(e.contains(want), "{e} should mention {want}");
        }
        // Without the provider's block at all.
        let bare = mint(&w.platform, &w.provider.public(), &w.facts).unwrap();
        let e = authorize(&bare, &p, &req(&c, "101001/000001", None, 1_800_000_000)).unwrap_err();
        assert!(e.to_string().contains("approval"), "{e}");
    }
}
