//! Passwords: argon2id hashes in PHC strings (the `argon2` crate of RustCrypto, with its default
//! parameters: 19 MiB, 2 passes, 1 lane — OWASP's recommendation), a policy in the spirit of
//! 等保 2.0 (length and character classes), and generated passwords for new accounts.
//!
//! Hashing and verifying take tens of milliseconds on purpose: call them off the async runtime,
//! and bound how many run at once (the HTTP layer does).

use std::sync::OnceLock;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::Rng;

/// Fewest characters a password has.
pub const MIN_CHARS: usize = 10;
/// Most bytes a password has (argon2 takes any length; this bounds the work per sign-in).
pub const MAX_BYTES: usize = 128;
/// Character classes (lower case, upper case, digits, anything else) a password draws from.
pub const MIN_CLASSES: usize = 3;

/// Why a password was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PasswordError {
    /// Too short.
    #[error("the password has {0} characters; use at least {MIN_CHARS}")]
    TooShort(usize),
    /// Too long.
    #[error("the password is {0} bytes long; at most {MAX_BYTES}")]
    TooLong(usize),
    /// Too few kinds of character.
    #[error("the password draws on {0} kinds of character; use at least {MIN_CLASSES} of: lower-case letters, upper-case letters, digits, other characters")]
    TooSimple(usize),
    /// It contains the account name.
    #[error("the password contains the account name; choose one that does not")]
    HoldsName,
    /// Hashing failed (not the password's fault).
    #[error("could not hash the password: {0}")]
    Hash(String),
}

/// Checks `password` for account `account` against the policy.
pub fn check_policy(account: &str, password: &str) -> Result<(), PasswordError> {
    if password.len() > MAX_BYTES {
        return Err(PasswordError::TooLong(password.len()));
    }
    let chars = password.chars().count();
    if chars < MIN_CHARS {
        return Err(PasswordError::TooShort(chars));
    }
    let classes = [
        password.chars().any(|c| c.is_lowercase()),
        password.chars().any(|c| c.is_uppercase()),
        password.chars().any(|c| c.is_ascii_digit()),
        password
            .chars()
            .any(|c| !c.is_lowercase() && !c.is_uppercase() && !c.is_ascii_digit()),
    ]
    .into_iter()
    .filter(|&b| b)
    .count();
    if classes < MIN_CLASSES {
        return Err(PasswordError::TooSimple(classes));
    }
    if !account.is_empty() && password.to_lowercase().contains(account) {
        return Err(PasswordError::HoldsName);
    }
    Ok(())
}

/// Hashes a password into an argon2id PHC string with a fresh 16-byte salt.
pub fn hash(password: &str) -> Result<String, PasswordError> {
    let salt_bytes: [u8; 16] = rand::rng().random();
    let salt =
        SaltString::encode_b64(&salt_bytes).map_err(|e| PasswordError::Hash(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

/// Whether `password` matches the PHC string `phc`. A malformed `phc` matches nothing.
pub fn verify(password: &str, phc: &str) -> bool {
    if password.len() > MAX_BYTES {
        return false;
    }
    match PasswordHash::new(phc) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// Verifies against a hash of a random password: for a sign-in to an account that does not
/// exist or is disabled, so that it takes as long as one that does (no account discovery by
/// timing). Always false.
pub fn verify_nobody(password: &str) -> bool {
    static NOBODY: OnceLock<String> = OnceLock::new();
    let phc = NOBODY.get_or_init(|| hash(&generate()).unwrap_or_default());
    // The answer is thrown away: only the time spent counts.
    let _ = std::hint::black_box(verify(password, phc));
    false
}

/// A new random password that passes the policy: three groups of five letters and digits that
/// are hard to misread (no 0/O, 1/l/I), joined by `-` (17 characters, about 64 bits).
pub fn generate() -> String {
    const LOWER: &[u8] = b"abcdefghijkmnpqrstuvwxyz";
    const UPPER: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";
    const DIGIT: &[u8] = b"23456789";
    let mut rng = rand::rng();
    let mut pick = |set: &[u8]| set[rng.random_range(0..set.len())] as char;
    let mut out = String::with_capacity(19);
    for group in 0..3 {
        if group > 0 {
            out.push('-');
        }
        // Each group of 5: a capital, three small letters, a digit.
        out.push(pick(UPPER));
        for _ in 0..3 {
            out.push(pick(LOWER));
        }
        out.push(pick(DIGIT));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy() {
        assert!(check_policy("zhangsan", "Abcdefgh12").is_ok());
        assert!(check_policy("zhangsan", "密码Abc123456").is_ok());
        assert!(matches!(
            check_policy("x", "Abc1"),
            Err(PasswordError::TooShort(4))
        ));
        assert!(matches!(
            check_policy("x", "abcdefghijk"),
            Err(PasswordError::TooSimple(1))
        ));
        assert!(matches!(
            check_policy("zhangsan", "ZhangSan-2026"),
            Err(PasswordError::HoldsName)
        ));
        assert!(matches!(
            check_policy("x", &"Ab1-".repeat(40)),
            Err(PasswordError::TooLong(160))
        ));
    }

    #[test]
    fn hash_verifies_only_its_password() {
        let h = hash("Correct-horse-1").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify("Correct-horse-1", &h));
        assert!(!verify("Correct-horse-2", &h));
        assert!(!verify("Correct-horse-1", "not a hash"));
        assert!(!verify_nobody("Correct-horse-1"));
        // Same password, fresh salt.
        assert_ne!(h, hash("Correct-horse-1").unwrap());
    }

    #[test]
    fn generated_passwords_pass_the_policy_and_differ() {
        let a = generate();
        assert_eq!(a.chars().count(), 17);
        assert!(check_policy("someone", &a).is_ok(), "{a}");
        assert_ne!(a, generate());
    }
}
