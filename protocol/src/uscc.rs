//! 统一社会信用代码 (Unified Social Credit Code, GB 32100-2015).
//!
//! 18 characters from the 31-character alphabet `0-9 A-H J-N P-R T U W-Y` (no I, O, Z, S, V).
//! The 18th character is a check character: with weights `3^i mod 31` for positions 1..17, the
//! check value is `31 - (Σ value×weight mod 31)`, where 31 maps to 0.

use std::fmt;

use serde::{Deserialize, Serialize};

const ALPHABET: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
const WEIGHTS: [u32; 17] = [
    1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28,
];

/// A validated USCC.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Uscc(String);

/// Why a string is not a valid USCC.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum UsccError {
    /// Wrong length.
    #[error("a 统一社会信用代码 has 18 characters, got {0}")]
    Length(usize),
    /// A character outside the GB 32100 alphabet.
    #[error("character {ch:?} at position {pos} is not allowed (allowed: 0-9 and A-Y without I O S V Z)")]
    Character {
        /// The offending character.
        ch: char,
        /// 1-based position.
        pos: usize,
    },
    /// The check character does not match.
    #[error("check character is {found:?} but GB 32100 gives {expected:?}")]
    Check {
        /// The character found at position 18.
        found: char,
        /// The character the first 17 give.
        expected: char,
    },
}

fn value(c: u8) -> Option<u32> {
    ALPHABET.iter().position(|&a| a == c).map(|p| p as u32)
}

/// Computes the GB 32100 check character for the first 17 characters.
pub fn check_character(first17: &str) -> Result<char, UsccError> {
    let bytes = first17.as_bytes();
    if bytes.len() != 17 || first17.chars().count() != 17 {
        return Err(UsccError::Length(first17.chars().count() + 1));
    }
    let mut sum = 0u32;
    for (i, &b) in bytes.iter().enumerate() {
        let v = value(b).ok_or(UsccError::Character {
            ch: b as char,
            pos: i + 1,
        })?;
        sum += v * WEIGHTS[i];
    }
    let c = (31 - sum % 31) % 31;
    Ok(ALPHABET[c as usize] as char)
}

impl Uscc {
    /// Parses and checks a USCC (upper-case expected; lower case is refused).
    pub fn parse(s: &str) -> Result<Self, UsccError> {
        let n = s.chars().count();
        if n != 18 {
            return Err(UsccError::Length(n));
        }
        for (i, ch) in s.chars().enumerate() {
            if !ch.is_ascii() || value(ch as u8).is_none() {
                return Err(UsccError::Character { ch, pos: i + 1 });
            }
        }
        let expected = check_character(&s[..17])?;
        let found = s.as_bytes()[17] as char;
        if found != expected {
            return Err(UsccError::Check { found, expected });
        }
        Ok(Self(s.to_owned()))
    }

    /// The code as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Uscc {
    type Error = UsccError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Uscc> for String {
    fn from(u: Uscc) -> Self {
        u.0
    }
}

impl fmt::Display for Uscc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Uscc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uscc({})", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_real_codes_verify() {
        // Published codes of real bodies (public registers).
        for code in [
            "91350100M000100Y43",
            "11100000000013127D",
            "91110000802100433B",
        ] {
            assert_eq!(
                Uscc::parse(code).map(|u| u.0),
                Ok(code.to_owned()),
                "{code}"
            );
        }
    }

    #[test]
    fn wrong_check_character_is_named() {
        let err = Uscc::parse("91350100M000100Y44").unwrap_err();
        assert_eq!(
            err,
            UsccError::Check {
                found: '4',
                expected: '3'
            }
        );
    }

    #[test]
    fn forbidden_letters_and_length() {
        assert_eq!(
            Uscc::parse("91350100M0001I0Y43").unwrap_err(),
            UsccError::Character { ch: 'I', pos: 14 }
        );
        assert_eq!(Uscc::parse("123").unwrap_err(), UsccError::Length(3));
    }
}
