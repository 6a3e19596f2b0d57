//! The person who acted: a feed entry caused by someone signed in to a node (an approver
//! approving, a cataloguer publishing) names them, so the entry — and the audit record that
//! commits to its hash — says who did it, not only which node signed.
//!
//! An actor is an account of the signing node: its login name and display name. Nodes vouch
//! for their own accounts; nothing here proves to another node that the person exists, only
//! that the node says so under its key.

use serde::{Deserialize, Serialize};

/// Longest account (login) name, in bytes.
pub const MAX_ACCOUNT_BYTES: usize = 32;
/// Shortest account (login) name, in bytes.
pub const MIN_ACCOUNT_BYTES: usize = 2;
/// Longest display name, in bytes (UTF-8: about 21 Chinese characters).
pub const MAX_DISPLAY_NAME_BYTES: usize = 64;

/// A person with an account on the signing node.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Actor {
    /// Login name: lower-case ASCII letters, digits, `.`, `_` and `-`, starting with a letter
    /// or digit ([`check_account`]).
    pub account: String,
    /// Name as people read it (e.g. 张三), no control characters ([`check_display_name`]).
    pub name: String,
}

impl Actor {
    /// Checks both names; the error says which is wrong and why.
    pub fn check(&self) -> Result<(), String> {
        check_account(&self.account)?;
        check_display_name(&self.name)
    }
}

impl std::fmt::Display for Actor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.name, self.account)
    }
}

/// Checks an account (login) name.
pub fn check_account(account: &str) -> Result<(), String> {
    let len = account.len();
    if !(MIN_ACCOUNT_BYTES..=MAX_ACCOUNT_BYTES).contains(&len) {
        return Err(format!(
            "account name {account:?} is {len} characters long; use {MIN_ACCOUNT_BYTES} to {MAX_ACCOUNT_BYTES}"
        ));
    }
    let first_ok = account
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let rest_ok = account
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
    if !(first_ok && rest_ok) {
        return Err(format!(
            "account name {account:?} may hold only lower-case ASCII letters, digits, '.', '_' and '-', and starts with a letter or digit (e.g. zhangsan or wang.wei)"
        ));
    }
    Ok(())
}

/// Checks a display name.
pub fn check_display_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() {
        return Err("the display name is empty; give the person's name (e.g. 张三)".into());
    }
    if name.len() > MAX_DISPLAY_NAME_BYTES {
        return Err(format!(
            "the display name is {} bytes long; at most {MAX_DISPLAY_NAME_BYTES} (about 21 Chinese characters)",
            name.len()
        ));
    }
    if name.chars().any(char::is_control) {
        return Err("the display name holds a control character (a line break, a tab, …)".into());
    }
    if name.chars().any(is_invisible_format) {
        return Err("the display name holds an invisible formatting character (a direction override, a zero-width space, …), which could make it read as another name".into());
    }
    Ok(())
}

/// Invisible formatting characters (Unicode category Cf) that change how a name reads: soft
/// hyphen, Arabic letter mark, Mongolian vowel separator, zero-width characters, direction
/// marks, embeddings, overrides and isolates, word joiner and invisible operators, and the
/// byte-order mark.
fn is_invisible_format(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{206F}'
        | '\u{FEFF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_names() {
        for ok in ["zhangsan", "wang.wei", "li_4", "a1", "0ops-team"] {
            assert!(check_account(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a",
            "Zhangsan",
            "张三",
            "-x",
            ".x",
            "a b",
            "x/y",
            &"a".repeat(33),
        ] {
            assert!(check_account(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn display_names() {
        assert!(check_display_name("张三").is_ok());
        assert!(check_display_name(&"张".repeat(21)).is_ok());
        assert!(check_display_name(&"张".repeat(22)).is_err());
        assert!(check_display_name("  ").is_err());
        assert!(check_display_name("张\n三").is_err());
        assert!(check_display_name("张\u{202E}三").is_err());
        assert!(check_display_name("张\u{200B}三").is_err());
    }
}
