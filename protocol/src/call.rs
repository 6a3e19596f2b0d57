//! API service calls (接口共享): what a consumer's node asks a provider's query service over one
//! of its table resources, and the provider's signed answer.
//!
//! A [`Query`] is a lookup (the rows whose key 信息项 equals a value, some 信息项 of them) or a
//! 核验 (whether a row holds every submitted value: match or no match, no data). The provider
//! answers with an [`Answer`] sealed as [`Kind::CallAnswer`]: the answer names the consumer,
//! the resource and version, the hash of the query it answers and the result itself, so the
//! consumer holds the provider's signed word for what it was told.

use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError};
use crate::envelope::{Envelope, EnvelopeError, Kind};
use crate::{NodeId, ResourceCode, SecretKey};

/// Layout version of [`Answer`].
pub const ANSWER_VERSION: u8 = 1;
/// Most rows one lookup returns.
pub const MAX_ROWS: u32 = 100;
/// Most 信息项 a lookup returns, or a 核验 submits.
pub const MAX_ITEMS: usize = 64;
/// Longest value (in characters) a query submits.
pub const MAX_VALUE_CHARS: usize = 1024;
/// Largest answer envelope.
pub const MAX_ANSWER_BYTES: usize = 2 * 1024 * 1024;
/// Longest 信息项 name (characters), as in a catalogue entry.
pub const MAX_NAME_CHARS: usize = 64;
/// Largest encoded query: it travels in one data-protocol request frame with the code and grant.
pub const MAX_QUERY_BYTES: usize = 32 * 1024;

/// What a consumer asks an API service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Query {
    /// The rows whose 信息项 `key` equals `value` exactly: their `fields`, at most `limit`.
    Lookup {
        /// The key 信息项.
        key: String,
        /// The value looked up.
        value: String,
        /// The 信息项 returned, in order.
        fields: Vec<String>,
        /// Most rows wanted (at most [`MAX_ROWS`]).
        limit: u32,
    },
    /// 核验: whether one row holds every one of these (信息项, value) pairs. The answer is
    /// match or no match only.
    Verify {
        /// The submitted record.
        record: Vec<(String, String)>,
    },
}

/// Why a query is malformed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct QueryError(pub String);

impl Query {
    /// `"lookup"` or `"verify"`.
    pub fn kind(&self) -> &'static str {
        match self {
            Query::Lookup { .. } => "lookup",
            Query::Verify { .. } => "verify",
        }
    }

    /// Every 信息项 the query reads (the key and the fields, or the record's items), each once.
    pub fn items(&self) -> Vec<&str> {
        let mut all: Vec<&str> = match self {
            Query::Lookup { key, fields, .. } => std::iter::once(key.as_str())
                .chain(fields.iter().map(String::as_str))
                .collect(),
            Query::Verify { record } => record.iter().map(|(k, _)| k.as_str()).collect(),
        };
        let mut seen = std::collections::HashSet::new();
        all.retain(|i| seen.insert(*i));
        all
    }

    /// Checks the bounds: names given and at most [`MAX_NAME_CHARS`], values not too long, at
    /// most [`MAX_ITEMS`] 信息项 (none twice) and [`MAX_ROWS`] rows, at most
    /// [`MAX_QUERY_BYTES`] encoded.
    pub fn check(&self) -> Result<(), QueryError> {
        let err = |m: String| Err(QueryError(m));
        let long = |v: &str| v.chars().count() > MAX_VALUE_CHARS;
        if let Some(n) = self
            .items_unchecked()
            .find(|n| n.is_empty() || n.chars().count() > MAX_NAME_CHARS)
        {
            let shown: String = n.chars().take(MAX_NAME_CHARS).collect();
            return err(format!(
                "信息项 name {shown:?} is empty or longer than {MAX_NAME_CHARS} characters"
            ));
        }
        let size = codec::encode(self).len();
        if size > MAX_QUERY_BYTES {
            return err(format!(
                "the query is {size} bytes encoded, more than {MAX_QUERY_BYTES}; send fewer or shorter values"
            ));
        }
        match self {
            Query::Lookup {
                key,
                value,
                fields,
                limit,
            } => {
                if key.is_empty() {
                    return err("a lookup names its key 信息项".into());
                }
                if fields.is_empty() || fields.len() > MAX_ITEMS {
                    return err(format!(
                        "a lookup returns 1 to {MAX_ITEMS} 信息项; {} were asked for",
                        fields.len()
                    ));
                }
                let mut seen = std::collections::HashSet::new();
                if let Some(f) = fields.iter().find(|f| !seen.insert(*f)) {
                    return err(format!("信息项 {f:?} is asked for twice"));
                }
                if *limit == 0 || *limit > MAX_ROWS {
                    return err(format!("limit must be 1 to {MAX_ROWS}, not {limit}"));
                }
                if long(value) {
                    return err(format!(
                        "the value is longer than {MAX_VALUE_CHARS} characters"
                    ));
                }
            }
            Query::Verify { record } => {
                if record.is_empty() || record.len() > MAX_ITEMS {
                    return err(format!(
                        "a 核验 submits 1 to {MAX_ITEMS} 信息项; {} were given",
                        record.len()
                    ));
                }
                let mut seen = std::collections::HashSet::new();
                for (k, v) in record {
                    if k.is_empty() || !seen.insert(k) {
                        return err(format!("信息项 {k:?} is empty or given twice"));
                    }
                    if long(v) {
                        return err(format!(
                            "the value of {k:?} is longer than {MAX_VALUE_CHARS} characters"
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    /// Every name the query gives, repeats included.
    fn items_unchecked(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        match self {
            Query::Lookup { key, fields, .. } => {
                Box::new(std::iter::once(key.as_str()).chain(fields.iter().map(String::as_str)))
            }
            Query::Verify { record } => Box::new(record.iter().map(|(k, _)| k.as_str())),
        }
    }

    /// BLAKE3 of the query's CBOR: what an answer names and both call logs record.
    pub fn hash(&self) -> [u8; 32] {
        *blake3::hash(&codec::encode(self)).as_bytes()
    }
}

/// What a query found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// A lookup's rows: one value per field (`None`: empty), at most the query's limit;
    /// `more` when further rows matched.
    Rows {
        /// The 信息项 returned, in order.
        fields: Vec<String>,
        /// The rows.
        rows: Vec<Vec<Option<String>>>,
        /// More rows matched than were returned.
        more: bool,
    },
    /// A 核验's answer.
    Match(bool),
}

/// The provider's answer to one call (sealed as [`Kind::CallAnswer`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// Layout version ([`ANSWER_VERSION`]).
    pub layout: u8,
    /// 32 hex digits chosen by the provider: the call's id in both call logs.
    pub id: String,
    /// The provider (the signer).
    pub provider: NodeId,
    /// The consumer that called.
    pub consumer: NodeId,
    /// The resource.
    pub code: ResourceCode,
    /// The dataset version answered from.
    pub version: u64,
    /// [`Query::hash`] of the query answered.
    pub query: [u8; 32],
    /// The grant (application id) it was answered under, if any.
    pub grant: Option<String>,
    /// The result.
    pub outcome: Outcome,
    /// When the provider signed (ms since the Unix epoch).
    pub signed_at_ms: u64,
}

/// Why an answer envelope was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AnswerError {
    /// The envelope failed.
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    /// The payload failed.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The envelope's signer is not the answer's provider, or the layout is unknown.
    #[error("the answer is not signed by the provider it names, or its layout is unknown")]
    Shape,
}

/// An opened, verified answer.
#[derive(Clone, Debug)]
pub struct SignedAnswer {
    /// The answer.
    pub answer: Answer,
    /// BLAKE3 of the envelope bytes: the response hash in the call logs.
    pub hash: [u8; 32],
}

impl Answer {
    /// Seals the answer with the provider's key; the envelope bytes.
    pub fn seal(&self, key: &SecretKey) -> Vec<u8> {
        Envelope::seal(Kind::CallAnswer, key, codec::encode(self)).to_bytes()
    }
}

impl SignedAnswer {
    /// Opens answer envelope bytes: the signature, the layout and the signer.
    pub fn open(bytes: &[u8]) -> Result<Self, AnswerError> {
        let env = Envelope::open_limited(bytes, Kind::CallAnswer, MAX_ANSWER_BYTES)?;
        let answer: Answer = codec::decode(env.payload(), MAX_ANSWER_BYTES)?;
        if answer.layout != ANSWER_VERSION || env.signer() != answer.provider {
            return Err(AnswerError::Shape);
        }
        Ok(Self {
            answer,
            hash: *blake3::hash(bytes).as_bytes(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup() -> Query {
        Query::Lookup {
            key: "身份证号".into(),
            value: "320684".into(),
            fields: vec!["姓名".into()],
            limit: 10,
        }
    }

    #[test]
    fn bounds_are_checked() {
        assert_eq!(lookup().check(), Ok(()));
        let Query::Lookup { key, value, .. } = lookup() else {
            unreachable!()
        };
        let too_many = Query::Lookup {
            key: key.clone(),
            value: value.clone(),
            fields: vec!["a".into(); MAX_ITEMS + 1],
            limit: 1,
        };
        assert!(too_many.check().is_err());
        let no_limit = Query::Lookup {
            key,
            value,
            fields: vec!["a".into()],
            limit: 0,
        };
        assert!(no_limit.check().is_err());
        let twice_asked = Query::Lookup {
            key: "k".into(),
            value: "v".into(),
            fields: vec!["a".into(), "a".into()],
            limit: 1,
        };
        assert!(twice_asked.check().is_err());
        let long_name = Query::Lookup {
            key: "k".repeat(MAX_NAME_CHARS + 1),
            value: "v".into(),
            fields: vec!["a".into()],
            limit: 1,
        };
        assert!(long_name.check().is_err());
        let big = Query::Verify {
            record: (0..MAX_ITEMS)
                .map(|i| (format!("f{i}"), "x".repeat(MAX_VALUE_CHARS)))
                .collect(),
        };
        assert!(big.check().unwrap_err().0.contains("bytes"));
        let twice = Query::Verify {
            record: vec![("a".into(), "1".into()), ("a".into(), "2".into())],
        };
        assert!(twice.check().is_err());
        let long = Query::Verify {
            record: vec![("a".into(), "x".repeat(MAX_VALUE_CHARS + 1))],
        };
        assert!(long.check().is_err());
    }

    #[test]
    fn items_are_listed_once() {
        let q = Query::Lookup {
            key: "a".into(),
            value: "1".into(),
            fields: vec!["a".into(), "b".into()],
            limit: 1,
        };
        assert_eq!(q.items(), ["a", "b"]);
    }

    #[test]
    fn answers_round_trip_and_name_their_signer() {
        let key = SecretKey::from_bytes([7; 32]);
        let other = SecretKey::from_bytes([8; 32]);
        let a = Answer {
            layout: ANSWER_VERSION,
            id: "0".repeat(32),
            provider: key.public(),
            consumer: other.public(),
            code: ResourceCode::parse("301001/000001").unwrap(),
            version: 1,
            query: lookup().hash(),
            grant: None,
            outcome: Outcome::Match(true),
            signed_at_ms: 1,
        };
        let bytes = a.seal(&key);
        let opened = SignedAnswer::open(&bytes).unwrap();
        assert_eq!(opened.answer, a);
        assert_eq!(opened.hash, *blake3::hash(&bytes).as_bytes());
        // Signed by another key than the provider it names: refused.
        assert!(SignedAnswer::open(&a.seal(&other)).is_err());
        let mut tampered = bytes.clone();
        let last = tampered.len() - 70;
        tampered[last] ^= 1;
        assert!(SignedAnswer::open(&tampered).is_err());
    }
}
