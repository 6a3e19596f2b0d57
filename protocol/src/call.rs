//! API service calls (接口共享): what a consumer's node asks a provider's query service over one
//! of its table resources, and the provider's signed answer.
//!
//! A [`Query`] is a lookup (the rows whose key 信息项 equals a value, some 信息项 of them) or a
//! 核验 (whether a row holds every submitted value: match or no match, no data). The provider
//! answers with an [`Answer`] sealed as [`Kind::CallAnswer`]: the answer names the consumer,
//! the resource and version, the hash of the query it answers and the result itself, so the
//! consumer holds the provider's signed word for what it was told. A refused call is sealed the
//! same way, its outcome [`Outcome::Refused`] or [`Outcome::Throttled`].

use serde::{Deserialize, Serialize};

use crate::codec::{self, DecodeError};
use crate::envelope::{Envelope, EnvelopeError, Kind};
use crate::refusal::RefusalKind;
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
/// Most filters a lookup applies.
pub const MAX_FILTERS: usize = 8;
/// Most matching rows a lookup skips (paging goes at most this far).
pub const MAX_OFFSET: u32 = 100_000;

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// How a filter compares a row's value with its own.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Equal.
    Eq,
    /// Not equal (an empty value is not equal to any value).
    Ne,
    /// Less than.
    Lt,
    /// Less than or equal.
    Le,
    /// Greater than.
    Gt,
    /// Greater than or equal.
    Ge,
    /// Starts with.
    Prefix,
}

impl Op {
    /// The operators as written in a filter, longest first (so `<=` is not read as `<`).
    pub const WRITTEN: [(&'static str, Op); 7] = [
        ("!=", Op::Ne),
        ("<=", Op::Le),
        (">=", Op::Ge),
        ("^=", Op::Prefix),
        ("=", Op::Eq),
        ("<", Op::Lt),
        (">", Op::Gt),
    ];

    /// Whether `cell` (a row's value; `None`: empty) passes against `value`. Two numbers compare
    /// as numbers, anything else as text (so dates written YYYY-MM-DD compare in order); an empty
    /// cell passes no filter.
    pub fn test(self, cell: Option<&str>, value: &str) -> bool {
        let Some(cell) = cell else {
            return false;
        };
        use std::cmp::Ordering::*;
        match self {
            // Equality is on the text: 007 is not 7, and long ID numbers never round.
            Op::Eq => cell == value,
            Op::Ne => cell != value,
            Op::Prefix => cell.starts_with(value),
            Op::Lt => order(cell, value) == Less,
            Op::Le => order(cell, value) != Greater,
            Op::Gt => order(cell, value) == Greater,
            Op::Ge => order(cell, value) != Less,
        }
    }

    /// Whether this operator can reveal more of a value than whether it equals one given
    /// (ranges and prefixes): refused on a masked 信息项.
    pub fn probes(self) -> bool {
        !matches!(self, Op::Eq | Op::Ne)
    }
}

/// Two values in order: as numbers when both are plain decimals of at most 15 significant
/// digits (exact in an `f64`), else as text (so dates written YYYY-MM-DD compare in order).
fn order(a: &str, b: &str) -> std::cmp::Ordering {
    fn number(s: &str) -> Option<f64> {
        let t = s.trim();
        let digits = t.bytes().filter(u8::is_ascii_digit).count();
        let plain = !t.is_empty()
            && t.bytes()
                .enumerate()
                .all(|(i, c)| c.is_ascii_digit() || c == b'.' || (i == 0 && c == b'-'));
        if !plain || digits == 0 || digits > 15 {
            return None;
        }
        t.parse::<f64>().ok().filter(|f| f.is_finite())
    }
    match (number(a), number(b)) {
        (Some(x), Some(y)) => x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal),
        _ => a.cmp(b),
    }
}

/// A condition on one 信息项 of the rows a lookup returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filter {
    /// The 信息项.
    pub item: String,
    /// The comparison.
    pub op: Op,
    /// The value compared with.
    pub value: String,
}

impl Filter {
    /// Parses `信息项<op>value`, e.g. `出生日期>=1990-01-01`, `性别=男`, `地址^=海门`.
    pub fn parse(text: &str) -> Result<Self, QueryError> {
        // The first operator character ends the name.
        let at = text
            .char_indices()
            .find(|(_, c)| matches!(c, '=' | '!' | '<' | '>' | '^'))
            .map(|(i, _)| i)
            .ok_or_else(|| {
                QueryError(format!(
                    "filter {text:?}: write 信息项, an operator (= != < <= > >= ^=) and a value, e.g. 出生日期>=1990-01-01"
                ))
            })?;
        let (item, rest) = text.split_at(at);
        let (op, value) = Op::WRITTEN
            .iter()
            .find_map(|(w, op)| rest.strip_prefix(w).map(|v| (*op, v)))
            .ok_or_else(|| {
                QueryError(format!(
                    "filter {text:?}: the operator must be one of = != < <= > >= ^="
                ))
            })?;
        Ok(Filter {
            item: item.trim().to_string(),
            op,
            value: value.to_string(),
        })
    }
}

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
        /// Further conditions every row returned meets (at most [`MAX_FILTERS`]).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        filters: Vec<Filter>,
        /// Matching rows skipped before the first returned (paging; at most [`MAX_OFFSET`]).
        #[serde(default, skip_serializing_if = "is_zero")]
        offset: u32,
    },
    /// 核验: whether one row holds every one of these (信息项, value) pairs. The answer is
    /// match or no match only.
    Verify {
        /// The submitted record.
        record: Vec<(String, String)>,
    },
    /// A request to a proxied service: the provider's node forwards it to the department's own
    /// HTTP/JSON backend, if the service's OpenAPI description has the operation.
    Http {
        /// `GET`, `POST`, `PUT`, `PATCH` or `DELETE`.
        method: String,
        /// The path below the service, from `/` (percent-encoded as sent).
        path: String,
        /// The query string, without `?` (may be empty).
        query: String,
        /// The request body's media type, if there is a body.
        content_type: Option<String>,
        /// The request body (at most [`MAX_HTTP_BODY`]).
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    },
}

/// Largest request body a proxied call forwards.
pub const MAX_HTTP_BODY: usize = 16 * 1024;
/// Longest path (bytes) of a proxied call.
pub const MAX_HTTP_PATH: usize = 1024;
/// Longest query string (bytes) of a proxied call.
pub const MAX_HTTP_QUERY: usize = 4096;
/// The methods a proxied call may use.
pub const HTTP_METHODS: [&str; 5] = ["GET", "POST", "PUT", "PATCH", "DELETE"];

/// One path segment percent-decoded, or `None` when an escape is malformed.
fn decode_segment(seg: &str) -> Option<Vec<u8>> {
    let b = seg.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Whether `path` is a plain request path: from `/`, printable ASCII without `?`, `#` or `\\`,
/// every escape well-formed, and no segment that decodes to `.` or `..` or holds `/`, `\\`, `;`
/// or a control character once decoded (nothing a backend or URL parser could resolve out of
/// the service's base, or read as another path).
fn plain_path(path: &str) -> bool {
    path.starts_with('/')
        && path
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'?' | b'#' | b'\\'))
        && path
            .split('/')
            .skip(1)
            .all(|seg| match decode_segment(seg) {
                Some(d) => {
                    d != b"."
                        && d != b".."
                        && !d
                            .iter()
                            .any(|&c| matches!(c, b'/' | b'\\' | b';') || c < 0x20 || c == 0x7f)
                }
                None => false,
            })
}

/// A node's call log head, anchored in its feed (and so in the hub's audit log): the log held
/// `size` records and its hash chain stood at `head`. Every call up to `size` is then fixed: a
/// record changed, dropped or inserted later no longer leads to this head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogHead {
    /// Records in the log.
    pub size: u64,
    /// The BLAKE3 chain head after record `size`.
    #[serde(with = "crate::bytes32")]
    pub head: [u8; 32],
}

impl LogHead {
    /// The audit record id of this anchor: `calls-` and the head in hex.
    pub fn record_id(&self) -> String {
        format!("calls-{}", hex::encode(self.head))
    }

    /// An anchor names at least one record.
    pub fn check(&self) -> Result<(), String> {
        if self.size == 0 {
            return Err("a call log anchor names an empty log".into());
        }
        Ok(())
    }
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
            Query::Http { .. } => "http",
        }
    }

    /// Every 信息项 the query reads (the key and the fields, or the record's items), each once.
    pub fn items(&self) -> Vec<&str> {
        let mut all: Vec<&str> = match self {
            Query::Lookup {
                key,
                fields,
                filters,
                ..
            } => std::iter::once(key.as_str())
                .chain(fields.iter().map(String::as_str))
                .chain(filters.iter().map(|f| f.item.as_str()))
                .collect(),
            Query::Verify { record } => record.iter().map(|(k, _)| k.as_str()).collect(),
            // A proxied call names no 信息项: the provider checks every 信息项 of the entry.
            Query::Http { .. } => Vec::new(),
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
                filters,
                offset,
            } => {
                if filters.len() > MAX_FILTERS {
                    return err(format!(
                        "a lookup applies at most {MAX_FILTERS} filters; {} were given",
                        filters.len()
                    ));
                }
                if let Some(f) = filters.iter().find(|f| long(&f.value)) {
                    return err(format!(
                        "the value of the filter on {:?} is longer than {MAX_VALUE_CHARS} characters",
                        f.item
                    ));
                }
                if *offset > MAX_OFFSET {
                    return err(format!(
                        "offset must be at most {MAX_OFFSET}, not {offset}; narrow the lookup with filters instead"
                    ));
                }
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
            Query::Http {
                method,
                path,
                query,
                content_type,
                body,
            } => {
                if !HTTP_METHODS.contains(&method.as_str()) {
                    return err(format!(
                        "method {method:?} is not one of {}",
                        HTTP_METHODS.join(", ")
                    ));
                }
                if path.len() > MAX_HTTP_PATH || !plain_path(path) {
                    return err(format!(
                        "path {:?} must start with /, be at most {MAX_HTTP_PATH} bytes of printable ASCII (percent-encode the rest) and have no . or .. segment",
                        path.chars().take(80).collect::<String>()
                    ));
                }
                if query.len() > MAX_HTTP_QUERY
                    || !query.bytes().all(|b| b.is_ascii_graphic() && b != b'#')
                {
                    return err(format!(
                        "the query string must be at most {MAX_HTTP_QUERY} bytes of printable ASCII (percent-encoded)"
                    ));
                }
                if body.len() > MAX_HTTP_BODY {
                    return err(format!(
                        "the request body is {} bytes, more than {MAX_HTTP_BODY}",
                        body.len()
                    ));
                }
                if content_type.as_ref().is_some_and(|t| {
                    t.len() > 128 || !t.bytes().all(|b| (b' '..=b'~').contains(&b))
                }) {
                    return err(
                        "the Content-Type must be at most 128 printable ASCII characters".into(),
                    );
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
            Query::Lookup {
                key,
                fields,
                filters,
                ..
            } => Box::new(
                std::iter::once(key.as_str())
                    .chain(fields.iter().map(String::as_str))
                    .chain(filters.iter().map(|f| f.item.as_str())),
            ),
            Query::Verify { record } => Box::new(record.iter().map(|(k, _)| k.as_str())),
            Query::Http { .. } => Box::new(std::iter::empty()),
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
    /// A proxied service's answer, as its backend gave it.
    Http {
        /// The backend's HTTP status.
        status: u16,
        /// The backend's media type, if it said.
        content_type: Option<String>,
        /// The body.
        #[serde(with = "serde_bytes")]
        body: Vec<u8>,
    },
    /// The call was refused (most refusals come before anything is read; some after, e.g. an
    /// answer too large). The provider signs it like an answer, so the consumer can prove it was
    /// refused: `kind` is what the provider asserts; the message is for people and may quote
    /// what the consumer sent (信息项 names, a path). Its [`Answer::version`] is 0.
    Refused {
        /// Why, for machines.
        kind: RefusalKind,
        /// What was wrong and what to do, for people (at most [`MAX_REFUSAL_CHARS`]).
        message: String,
    },
    /// The call was over the consumer's quota, signed like a refusal.
    Throttled {
        /// When a call would pass, in milliseconds.
        retry_after_ms: u64,
        /// What was exceeded, for people (at most [`MAX_REFUSAL_CHARS`]).
        message: String,
    },
}

/// Longest message (characters) of a signed refusal.
pub const MAX_REFUSAL_CHARS: usize = 500;

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
    /// The dataset version answered from (0 for a refusal).
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
            filters: Vec::new(),
            offset: 0,
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
            filters: Vec::new(),
            offset: 0,
        };
        assert!(too_many.check().is_err());
        let no_limit = Query::Lookup {
            key,
            value,
            fields: vec!["a".into()],
            limit: 0,
            filters: Vec::new(),
            offset: 0,
        };
        assert!(no_limit.check().is_err());
        let twice_asked = Query::Lookup {
            key: "k".into(),
            value: "v".into(),
            fields: vec!["a".into(), "a".into()],
            limit: 1,
            filters: Vec::new(),
            offset: 0,
        };
        assert!(twice_asked.check().is_err());
        let long_name = Query::Lookup {
            key: "k".repeat(MAX_NAME_CHARS + 1),
            value: "v".into(),
            fields: vec!["a".into()],
            limit: 1,
            filters: Vec::new(),
            offset: 0,
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
    fn filters_parse_and_compare_numbers_as_numbers() {
        let f = Filter::parse("出生日期>=1990-01-01").unwrap();
        assert_eq!(
            (f.item.as_str(), f.op, f.value.as_str()),
            ("出生日期", Op::Ge, "1990-01-01")
        );
        assert_eq!(Filter::parse("年龄<=9").unwrap().op, Op::Le);
        assert_eq!(Filter::parse("a!=b").unwrap().op, Op::Ne);
        assert_eq!(Filter::parse("地址^=海门").unwrap().value, "海门");
        assert!(Filter::parse("no operator").is_err());
        assert!(Filter::parse("a=!b").is_ok_and(|f| f.value == "!b"));
        assert!(Filter::parse("a!b").is_err());
        // 10 > 9 as numbers, though "10" < "9" as text.
        assert!(Op::Gt.test(Some("10"), "9"));
        assert!(Op::Lt.test(Some("1989-12-31"), "1990-01-01"));
        assert!(!Op::Ne.test(None, "x"), "an empty cell passes no filter");
        assert!(!Op::Eq.test(Some("007"), "7"), "equality is on the text");
        // 18-digit ID numbers compare as text, never rounded to the same number.
        assert!(Op::Gt.test(Some("320684199001011235"), "320684199001011234"));
        assert!(!Op::Ge.test(Some("320684199001011233"), "320684199001011234"));
    }

    #[test]
    fn proxied_paths_cannot_walk_out() {
        let q = |method: &str, path: &str| Query::Http {
            method: method.into(),
            path: path.into(),
            query: String::new(),
            content_type: None,
            body: Vec::new(),
        };
        assert_eq!(q("GET", "/persons/320684").check(), Ok(()));
        assert_eq!(q("GET", "/persons/%E5%BC%A0").check(), Ok(()));
        for bad in [
            "persons",
            "/a/../b",
            "/a/%2e%2E/b",
            "/a%2Fb",
            "/a b",
            "/a?x=1",
            "/a\\b",
            "/./a",
            "/.%2e/admin",
            "/%2e./admin",
            "/a/..;/b",
            "/a%3bx",
            "/a%00",
            "/a%zz",
            "/a%2",
        ] {
            assert!(q("GET", bad).check().is_err(), "{bad}");
        }
        assert!(q("TRACE", "/a").check().is_err());
    }

    #[test]
    fn items_are_listed_once() {
        let q = Query::Lookup {
            key: "a".into(),
            value: "1".into(),
            fields: vec!["a".into(), "b".into()],
            limit: 1,
            filters: Vec::new(),
            offset: 0,
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
        // A refusal is sealed and opened the same way.
        let refused = Answer {
            version: 0,
            outcome: Outcome::Throttled {
                retry_after_ms: 1000,
                message: "1 call a second".into(),
            },
            ..a.clone()
        };
        let opened = SignedAnswer::open(&refused.seal(&key)).unwrap();
        assert_eq!(opened.answer, refused);
        let mut tampered = bytes.clone();
        let last = tampered.len() - 70;
        tampered[last] ^= 1;
        assert!(SignedAnswer::open(&tampered).is_err());
    }
}
