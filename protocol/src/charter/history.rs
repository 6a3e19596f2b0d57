//! Every charter version a node holds, as one chain, and judging a feed entry by the version its
//! signer named.
//!
//! A node may start from any version (the one it was given at setup) and fills in the earlier
//! ones from peers: a version is added only next to the versions held, linked by its hash
//! ([`Charter::previous`]) and checked by [`Charter::follows`]. So the versions held are always a
//! contiguous run `first..=latest` of one chain, whatever order they arrive in.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{Charter, CharterError, CharterHash, MemberStatus};
use crate::envelope::SignatureRule;
use crate::{Member, NodeId};

/// The charter versions a node holds.
#[derive(Clone, Debug, Default)]
pub struct History {
    versions: BTreeMap<u64, (Charter, CharterHash)>,
    /// Per key: the versions that closed its feed, with the last seq each keeps.
    closures: HashMap<NodeId, Vec<(u64, u64)>>,
    /// Every key some version held lists.
    keys: HashSet<NodeId>,
}

/// Why a charter version was not added.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HistoryError {
    /// This exact version is held already.
    #[error("charter version {0} is held already")]
    Duplicate(u64),
    /// A different charter of a version held: the authority signed two.
    #[error("EQUIVOCATION: the authority signed two different charters of version {version} ({held} held, {offered} offered)")]
    Equivocation {
        /// The version.
        version: u64,
        /// Hash of the one held.
        held: String,
        /// Hash of the one offered.
        offered: String,
    },
    /// Not next to the versions held: the versions between must come first.
    #[error("charter version {offered} is not next to the versions held ({first}..={latest}); the ones between are fetched first")]
    Gap {
        /// Offered.
        offered: u64,
        /// Earliest held.
        first: u64,
        /// Latest held.
        latest: u64,
    },
    /// Next to the versions held but not linked to them.
    #[error(transparent)]
    Chain(#[from] CharterError),
}

/// Why a feed entry is refused by the charter it names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The node holds no charter.
    #[error("this node holds no charter")]
    NoCharter,
    /// The entry names a version older than any held (fetched from peers, then judged).
    #[error("the entry names charter version {named}, older than the first held ({first})")]
    Unknown {
        /// Named.
        named: u64,
        /// First held.
        first: u64,
    },
    /// The entry names a version newer than any held (fetched from peers, then judged).
    #[error("the entry names charter version {named}, newer than the latest held ({latest})")]
    Ahead {
        /// Named.
        named: u64,
        /// Latest held.
        latest: u64,
    },
    /// The signer is not a member in the version it names.
    #[error("the signer is not a member in charter version {0}")]
    NotMember(u64),
    /// The signer is not active in the version it names.
    #[error("the signer is {status} in charter version {version}")]
    NotActive {
        /// Named.
        version: u64,
        /// Its status there.
        status: &'static str,
    },
    /// The entry was signed for ZIP-215 rules but names a version whose rules are strict.
    #[error("the entry is signed for ZIP-215 rules, but charter version {0} it names keeps strict rules (layout 1)")]
    Rule(u64),
    /// A later version closed the feed before this seq.
    #[error("charter version {version} closed this feed at seq {last_seq} for entries naming earlier versions")]
    Closed {
        /// The closing version.
        version: u64,
        /// Last seq kept.
        last_seq: u64,
    },
}

impl Refusal {
    /// A short stable label for counters.
    pub fn label(&self) -> &'static str {
        match self {
            Refusal::NoCharter => "no_charter",
            Refusal::Unknown { .. } => "charter_unknown",
            Refusal::Ahead { .. } => "charter_ahead",
            Refusal::NotMember(_) => "not_member",
            Refusal::NotActive { .. } => "suspended",
            Refusal::Closed { .. } => "feed_closed",
            Refusal::Rule(_) => "signature_rule",
        }
    }
}

impl History {
    /// No versions.
    pub fn new() -> Self {
        Self::default()
    }

    /// The latest version held.
    pub fn latest(&self) -> Option<&Charter> {
        self.versions.values().next_back().map(|(c, _)| c)
    }

    /// The latest version number held (0: none).
    pub fn version(&self) -> u64 {
        self.latest().map_or(0, |c| c.version)
    }

    /// The earliest version number held (0: none).
    pub fn first(&self) -> u64 {
        self.versions.keys().next().copied().unwrap_or(0)
    }

    /// Version `v`, if held.
    pub fn get(&self, v: u64) -> Option<&Charter> {
        self.versions.get(&v).map(|(c, _)| c)
    }

    /// The hash of version `v`, if held.
    pub fn hash(&self, v: u64) -> Option<CharterHash> {
        self.versions.get(&v).map(|(_, h)| *h)
    }

    /// Whether `key` is a member in any version held (its feed is worth fetching).
    pub fn ever_member(&self, key: &NodeId) -> bool {
        self.keys.contains(key)
    }

    /// Every closure held: the closed key, the closing version and the last seq it keeps.
    pub fn closures(&self) -> impl Iterator<Item = (NodeId, u64, u64)> + '_ {
        self.closures
            .iter()
            .flat_map(|(k, c)| c.iter().map(move |(w, last)| (*k, *w, *last)))
    }

    /// Adds a verified charter (its signature and [`Charter::check`] passed) whose payload
    /// hashes to `hash`, next to the versions held.
    pub fn add(&mut self, charter: Charter, hash: CharterHash) -> Result<(), HistoryError> {
        self.admits(&charter, &hash)?;
        let v = charter.version;
        for c in &charter.closed {
            self.closures
                .entry(c.node_key)
                .or_default()
                .push((v, c.last_seq));
        }
        self.keys.extend(charter.members.iter().map(|m| m.node_key));
        self.versions.insert(v, (charter, hash));
        Ok(())
    }

    /// Whether [`History::add`] would add this charter (changes nothing).
    pub fn admits(&self, charter: &Charter, hash: &CharterHash) -> Result<(), HistoryError> {
        let v = charter.version;
        if let Some((_, held)) = self.versions.get(&v) {
            if held == hash {
                return Err(HistoryError::Duplicate(v));
            }
            return Err(HistoryError::Equivocation {
                version: v,
                held: held.to_hex(),
                offered: hash.to_hex(),
            });
        }
        let (first, latest) = (self.first(), self.version());
        if !self.versions.is_empty() {
            if v == latest + 1 {
                let (prev, prev_hash) = &self.versions[&latest];
                charter.follows(prev, prev_hash)?;
            } else if v.checked_add(1) == Some(first) {
                let (next, _) = &self.versions[&first];
                next.follows(charter, hash)?;
            } else {
                return Err(HistoryError::Gap {
                    offered: v,
                    first,
                    latest,
                });
            }
        }
        Ok(())
    }

    /// Judges entry `seq` of `key`'s feed that names charter version `named`: the signer must
    /// be an active member in that version, and no later version may have closed its feed
    /// before `seq`. Returns the member as that version lists it.
    pub fn judge(&self, key: &NodeId, seq: u64, named: u64) -> Result<&Member, Refusal> {
        let (first, latest) = (self.first(), self.version());
        if self.versions.is_empty() {
            return Err(Refusal::NoCharter);
        }
        if named > latest {
            return Err(Refusal::Ahead { named, latest });
        }
        if named < first {
            return Err(Refusal::Unknown { named, first });
        }
        let Some((charter, _)) = self.versions.get(&named) else {
            return Err(Refusal::Unknown { named, first });
        };
        let member = charter.member(key).ok_or(Refusal::NotMember(named))?;
        if member.status != MemberStatus::Active {
            return Err(Refusal::NotActive {
                version: named,
                status: member.status.as_str(),
            });
        }
        if let Some(&(version, last_seq)) = self
            .closures
            .get(key)
            .into_iter()
            .flatten()
            .filter(|(w, _)| *w > named)
            .min_by_key(|(_, last)| *last)
        {
            if seq > last_seq {
                return Err(Refusal::Closed { version, last_seq });
            }
        }
        Ok(member)
    }

    /// Whether an entry signed for `rule` may name version `named` (held): an entry signed for
    /// ZIP-215 only a version whose rules are ZIP-215 ([`Charter::signature_rule`]); an entry
    /// signed for strict rules any version (strict-valid signatures are ZIP-215-valid, and every
    /// node judges it strictly).
    pub fn judge_rule(&self, named: u64, rule: SignatureRule) -> Result<(), Refusal> {
        let Some(charter) = self.get(named) else {
            return Err(Refusal::Unknown {
                named,
                first: self.first(),
            });
        };
        if rule == SignatureRule::Zip215 && charter.signature_rule() == SignatureRule::Strict {
            return Err(Refusal::Rule(named));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::charter::{ClosedFeed, Role, CHARTER_LAYOUT_VERSION};
    use crate::{codec, SecretKey, Uscc};

    const USCC: [&str; 2] = ["11320684MB000000", "11320684MB000001"];

    fn uscc(first16: &str) -> Uscc {
        let first17 = format!("{first16}0");
        let check = crate::uscc::check_character(&first17).unwrap_or_else(|e| panic!("{e}"));
        Uscc::parse(&format!("{first17}{check}")).unwrap_or_else(|e| panic!("{e}"))
    }

    fn key(n: u8) -> SecretKey {
        SecretKey::from_bytes([n; 32])
    }

    fn member(code: &str, key: &SecretKey, role: Role) -> Member {
        Member {
            uscc: uscc(code),
            name: format!("member {code}"),
            node_key: key.public(),
            role,
            addresses: Vec::new(),
            status: MemberStatus::Active,
        }
    }

    fn hash(c: &Charter) -> CharterHash {
        CharterHash::of(&codec::encode(c))
    }

    /// Version 1: a hub and one department.
    fn first(authority: &SecretKey, hub: &SecretKey, dept: &SecretKey) -> Charter {
        Charter {
            layout: CHARTER_LAYOUT_VERSION,
            federation: "海门区".into(),
            version: 1,
            issued_at_ms: 0,
            authority: authority.public(),
            members: vec![
                member(USCC[0], hub, Role::Hub),
                member(USCC[1], dept, Role::Department),
            ],
            timezone: super::super::DEFAULT_TIMEZONE.into(),
            witnesses: Default::default(),
            previous: None,
            closed: Vec::new(),
            feed_quota: Default::default(),
        }
    }

    fn next(prev: &Charter, f: impl FnOnce(&mut Charter)) -> Charter {
        let mut c = prev.clone();
        c.version += 1;
        c.previous = Some(hash(prev));
        c.closed.clear();
        f(&mut c);
        c.check().unwrap_or_else(|e| panic!("{e}"));
        c
    }

    #[test]
    fn entries_are_judged_by_the_version_they_name() {
        let authority = key(1);
        let (hub, dept, rekeyed) = (key(2), key(3), key(4));
        let v1 = first(&authority, &hub, &dept);
        v1.check().unwrap_or_else(|e| panic!("{e}"));
        // v2 suspends the department, keeping its feed up to seq 10.
        let v2 = next(&v1, |c| {
            c.members[1].status = MemberStatus::Suspended;
            c.closed.push(ClosedFeed {
                node_key: dept.public(),
                last_seq: 10,
            });
        });
        // v3 reinstates it under a new key: the old key stays closed (its closure is in v2).
        let v3 = next(&v2, |c| {
            c.members[1].status = MemberStatus::Active;
            c.members[1].node_key = rekeyed.public();
        });

        // A fresh node may start from the latest version and fill in the earlier ones.
        let mut h = History::new();
        h.add(v3.clone(), hash(&v3))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            h.judge(&dept.public(), 3, 1).map(|_| ()),
            Err(Refusal::Unknown { named: 1, first: 3 })
        );
        assert!(matches!(
            h.add(v1.clone(), hash(&v1)),
            Err(HistoryError::Gap { offered: 1, .. })
        ));
        h.add(v2.clone(), hash(&v2))
            .unwrap_or_else(|e| panic!("{e}"));
        h.add(v1.clone(), hash(&v1))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((h.first(), h.version()), (1, 3));

        // Entries the department signed while active stand, up to the closure.
        let m = h
            .judge(&dept.public(), 10, 1)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.uscc, uscc(USCC[1]));
        // Back-dated entries past the closure are refused.
        assert_eq!(
            h.judge(&dept.public(), 11, 1).map(|_| ()),
            Err(Refusal::Closed {
                version: 2,
                last_seq: 10
            })
        );
        // Entries naming the suspending version are refused, and so are the old key's entries
        // under the version that re-keyed the member.
        assert_eq!(
            h.judge(&dept.public(), 11, 2).map(|_| ()),
            Err(Refusal::NotActive {
                version: 2,
                status: "suspended"
            })
        );
        assert_eq!(
            h.judge(&dept.public(), 11, 3).map(|_| ()),
            Err(Refusal::NotMember(3))
        );
        // The new key publishes under v3; nobody may name a version not yet held.
        assert!(h.judge(&rekeyed.public(), 1, 3).is_ok());
        assert_eq!(
            h.judge(&rekeyed.public(), 1, 4).map(|_| ()),
            Err(Refusal::Ahead {
                named: 4,
                latest: 3
            })
        );
        assert!(h.ever_member(&dept.public()));

        // A second, different version 2 is equivocation; the same one is a duplicate.
        let other = next(&v1, |c| {
            c.members[1].status = MemberStatus::Suspended;
            c.closed.push(ClosedFeed {
                node_key: dept.public(),
                last_seq: 12,
            });
        });
        assert!(matches!(
            h.add(other.clone(), hash(&other)),
            Err(HistoryError::Equivocation { version: 2, .. })
        ));
        assert!(matches!(
            h.add(v2.clone(), hash(&v2)),
            Err(HistoryError::Duplicate(2))
        ));
    }

    #[test]
    fn a_member_suspended_twice_keeps_what_each_closure_keeps() {
        let authority = key(1);
        let (hub, dept) = (key(2), key(3));
        let v1 = first(&authority, &hub, &dept);
        let suspend = |c: &mut Charter, last_seq| {
            c.members[1].status = MemberStatus::Suspended;
            c.closed.push(ClosedFeed {
                node_key: dept.public(),
                last_seq,
            });
        };
        let v2 = next(&v1, |c| suspend(c, 10));
        let v3 = next(&v2, |c| c.members[1].status = MemberStatus::Active);
        let v4 = next(&v3, |c| suspend(c, 20));
        let mut h = History::new();
        for c in [&v1, &v2, &v3, &v4] {
            h.add(c.clone(), hash(c)).unwrap_or_else(|e| panic!("{e}"));
        }
        let closures: Vec<_> = h.closures().collect();
        assert_eq!(closures.len(), 2, "{closures:?}");
        // Entries signed under v3, between the suspensions, stand up to the second closure.
        assert!(h.judge(&dept.public(), 15, 3).is_ok());
        assert_eq!(
            h.judge(&dept.public(), 21, 3).map(|_| ()),
            Err(Refusal::Closed {
                version: 4,
                last_seq: 20
            })
        );
        // Under v1, the first closure holds whatever came later.
        assert_eq!(
            h.judge(&dept.public(), 15, 1).map(|_| ()),
            Err(Refusal::Closed {
                version: 2,
                last_seq: 10
            })
        );
        // A version too large to follow is refused by the charter checks, not an overflow.
        let mut huge = v4.clone();
        huge.version = u64::MAX;
        assert!(huge.check().is_err());
    }

    #[test]
    fn a_version_must_close_the_feeds_it_stops() {
        let authority = key(1);
        let (hub, dept) = (key(2), key(3));
        let v1 = first(&authority, &hub, &dept);
        let unclosed = next(&v1, |c| c.members[1].status = MemberStatus::Suspended);
        let mut h = History::new();
        h.add(v1.clone(), hash(&v1))
            .unwrap_or_else(|e| panic!("{e}"));
        let err = h.add(unclosed.clone(), hash(&unclosed));
        assert!(
            matches!(&err, Err(HistoryError::Chain(CharterError::Chain { .. }))),
            "{err:?}"
        );
        // A role change needs a closure too: a member must not keep a role it lost.
        let promoted = next(&v1, |c| c.members[1].role = Role::Cascade);
        assert!(h.add(promoted.clone(), hash(&promoted)).is_err());
        // Naming the wrong previous hash breaks the chain.
        let mut wrong = next(&v1, |_| {});
        wrong.previous = Some(CharterHash([7; 32]));
        assert!(h.add(wrong.clone(), hash(&wrong)).is_err());
    }

    #[test]
    fn an_entry_signed_for_zip215_names_only_a_charter_of_layout_2() {
        let mut c = first(&key(1), &key(2), &key(3));
        c.layout = 1;
        c.check().unwrap();
        let mut h = History::new();
        h.add(c.clone(), hash(&c)).unwrap();
        assert!(matches!(
            h.judge_rule(1, SignatureRule::Zip215),
            Err(Refusal::Rule(1))
        ));
        assert!(h.judge_rule(1, SignatureRule::Strict).is_ok());
        assert!(matches!(
            h.judge_rule(2, SignatureRule::Strict),
            Err(Refusal::Unknown { named: 2, .. })
        ));
        let mut h = History::new();
        c.layout = 2;
        h.add(c.clone(), hash(&c)).unwrap();
        assert!(h.judge_rule(1, SignatureRule::Zip215).is_ok());
        assert!(h.judge_rule(1, SignatureRule::Strict).is_ok());
        // A later version cannot go back to strict rules.
        let back = next(&c, |n| n.layout = 1);
        let refused = h.add(back.clone(), hash(&back)).unwrap_err().to_string();
        assert!(
            refused.contains("back from layout 2 to layout 1"),
            "{refused}"
        );
        c.layout = 3;
        let refused = c.check().unwrap_err().to_string();
        assert!(refused.contains("unsupported layout 3"), "{refused}");
    }
}
