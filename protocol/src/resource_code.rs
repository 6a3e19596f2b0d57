//! 信息资源分类 and 信息资源代码 (GB/T 21063 catalogue codes).
//!
//! A classification is a digit path: 类 (1 digit: 1 基础, 2 主题, 3 部门), 项 (2 digits),
//! 目 (3 digits) and an optional 细目 of further digits, e.g. `101001`. A resource code is
//! `{classification}/{6-digit sequence}`, e.g. `101001/000123`.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest classification accepted (类+项+目 = 6 digits, 细目 up to 6 more).
const MAX_CLASSIFICATION_DIGITS: usize = 12;

/// A validated classification path.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Classification(String);

/// A validated resource code.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ResourceCode(String);

/// Why a classification or resource code is invalid.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CodeError {
    /// Not digits, or too short or long.
    #[error(
        "classification {0:?} must be 6 to 12 digits: 类 (1-3), 项 (2), 目 (3), optional 细目"
    )]
    ClassificationShape(String),
    /// 类 is not 1, 2 or 3.
    #[error("类 must be 1 (基础), 2 (主题) or 3 (部门), got {0:?}")]
    Class(char),
    /// Not `{classification}/{6 digits}`.
    #[error(
        "resource code {0:?} must be {{classification}}/{{6-digit sequence}}, e.g. 101001/000123"
    )]
    CodeShape(String),
}

impl Classification {
    /// Parses a classification path.
    pub fn parse(s: &str) -> Result<Self, CodeError> {
        let n = s.len();
        if !(6..=MAX_CLASSIFICATION_DIGITS).contains(&n) || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(CodeError::ClassificationShape(s.to_owned()));
        }
        let class = s.as_bytes()[0] as char;
        if !matches!(class, '1' | '2' | '3') {
            return Err(CodeError::Class(class));
        }
        Ok(Self(s.to_owned()))
    }

    /// The path as digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 类 digit.
    pub fn class(&self) -> char {
        self.0.as_bytes()[0] as char
    }

    /// Whether `prefix` (any leading digits) matches this path: used by the search filter.
    pub fn starts_with(&self, prefix: &str) -> bool {
        self.0.starts_with(prefix)
    }
}

impl ResourceCode {
    /// Parses `{classification}/{6 digits}`.
    pub fn parse(s: &str) -> Result<Self, CodeError> {
        let shape = || CodeError::CodeShape(s.to_owned());
        let (class, seq) = s.split_once('/').ok_or_else(shape)?;
        Classification::parse(class)?;
        if seq.len() != 6 || !seq.bytes().all(|b| b.is_ascii_digit()) {
            return Err(shape());
        }
        Ok(Self(s.to_owned()))
    }

    /// The code as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The classification part.
    pub fn classification(&self) -> &str {
        self.0.split('/').next().unwrap_or_default()
    }
}

macro_rules! string_newtype_impls {
    ($t:ty) => {
        impl TryFrom<String> for $t {
            type Error = CodeError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::parse(&s)
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> Self {
                v.0
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($t), self.0)
            }
        }
    };
}
string_newtype_impls!(Classification);
string_newtype_impls!(ResourceCode);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes() {
        assert!(ResourceCode::parse("101001/000123").is_ok());
        assert!(ResourceCode::parse("30100100201/000001").is_ok());
        assert_eq!(
            ResourceCode::parse("101001-000123").unwrap_err(),
            CodeError::CodeShape("101001-000123".into())
        );
        assert_eq!(
            ResourceCode::parse("401001/000123").unwrap_err(),
            CodeError::Class('4')
        );
        assert!(ResourceCode::parse("101001/12345").is_err());
        assert_eq!(
            ResourceCode::parse("101001/000123")
                .unwrap()
                .classification(),
            "101001"
        );
    }
}
