//! Signed-in sessions, kept on the server (in memory: a restart signs everyone out).
//!
//! A session is a random 256-bit token given to the person at sign-in (a bearer token for the
//! API, a cookie for the portal) with its own CSRF token. The node keeps only the BLAKE3 hash
//! of each token, so a memory dump or a log line holds nothing that signs anyone in. A session
//! ends after [`Sessions::idle`] without use, after [`Sessions::max_age`] whatever the use, at
//! sign-out, and when its account is disabled or its password changes. At most
//! [`MAX_PER_ACCOUNT`] sessions per account (the oldest ends) and [`MAX_SESSIONS`] in all.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use rand::Rng;

/// Default time a session lasts without use.
pub const DEFAULT_IDLE: Duration = Duration::from_secs(30 * 60);
/// Default time a session lasts at most.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(12 * 3600);
/// Most sessions one account holds; a new one ends the oldest.
pub const MAX_PER_ACCOUNT: usize = 8;
/// Most sessions the node holds; a new one ends the least recently used.
pub const MAX_SESSIONS: usize = 4096;
/// Prefix of session tokens (tells them apart from the node's admin token in logs and errors).
pub const TOKEN_PREFIX: &str = "hts_";

/// A live session.
#[derive(Clone, Debug)]
pub struct Session {
    /// The account signed in.
    pub account: String,
    /// The CSRF token forms must echo.
    pub csrf: String,
    /// When the account's password was set as of sign-in: a session from before a password
    /// change (even one whose sign-in was still being checked) is refused.
    pub password_set_ms: u64,
    created: Instant,
    last_used: Instant,
    /// Order of creation (clocks may tie).
    serial: u64,
}

/// The node's sessions.
pub struct Sessions {
    by_hash: Mutex<HashMap<[u8; 32], Session>>,
    started: std::sync::atomic::AtomicU64,
    idle: Duration,
    max_age: Duration,
}

impl Default for Sessions {
    fn default() -> Self {
        Self::new(DEFAULT_IDLE, DEFAULT_MAX_AGE)
    }
}

impl Sessions {
    /// Sessions that end after `idle` without use or `max_age` in all.
    pub fn new(idle: Duration, max_age: Duration) -> Self {
        Self {
            by_hash: Mutex::new(HashMap::new()),
            started: std::sync::atomic::AtomicU64::new(0),
            idle,
            max_age,
        }
    }

    /// Time a session lasts without use.
    pub fn idle(&self) -> Duration {
        self.idle
    }

    /// Time a session lasts at most.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// Starts a session for `account`; returns its token (given to the person once) and the
    /// session.
    pub fn start(&self, account: &str, password_set_ms: u64) -> (String, Session) {
        let now = Instant::now();
        let token = random_token(TOKEN_PREFIX);
        let session = Session {
            account: account.to_string(),
            csrf: random_token(""),
            password_set_ms,
            created: now,
            last_used: now,
            serial: self
                .started
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        };
        let mut map = self.lock();
        self.expire(&mut map, now);
        let mut own: Vec<([u8; 32], u64)> = map
            .iter()
            .filter(|(_, s)| s.account == account)
            .map(|(k, s)| (*k, s.serial))
            .collect();
        if own.len() >= MAX_PER_ACCOUNT {
            own.sort_by_key(|(_, serial)| *serial);
            for (k, _) in own.iter().take(own.len() + 1 - MAX_PER_ACCOUNT) {
                map.remove(k);
            }
        }
        if map.len() >= MAX_SESSIONS {
            if let Some(k) = map
                .iter()
                .min_by_key(|(_, s)| (s.last_used, s.serial))
                .map(|(k, _)| *k)
            {
                map.remove(&k);
            }
        }
        map.insert(hash(&token), session.clone());
        (token, session)
    }

    /// The live session of `token`, marked used now; `None` when there is none or it ended.
    pub fn resolve(&self, token: &str) -> Option<Session> {
        if !token.starts_with(TOKEN_PREFIX) {
            return None;
        }
        let now = Instant::now();
        let key = hash(token);
        let mut map = self.lock();
        let live = map.get(&key).is_some_and(|s| self.is_live(s, now));
        if !live {
            map.remove(&key);
            return None;
        }
        let s = map.get_mut(&key)?;
        s.last_used = now;
        Some(s.clone())
    }

    /// Ends the session of `token` (sign-out); whether there was one.
    pub fn end(&self, token: &str) -> bool {
        self.lock().remove(&hash(token)).is_some()
    }

    /// Ends every session of `account` (disabled, password or roles changed); how many.
    pub fn end_all(&self, account: &str) -> usize {
        let mut map = self.lock();
        let before = map.len();
        map.retain(|_, s| s.account != account);
        before - map.len()
    }

    /// Live sessions of `account`.
    pub fn count(&self, account: &str) -> usize {
        let now = Instant::now();
        self.lock()
            .values()
            .filter(|s| s.account == account && self.is_live(s, now))
            .count()
    }

    fn is_live(&self, s: &Session, now: Instant) -> bool {
        now.duration_since(s.last_used) < self.idle && now.duration_since(s.created) < self.max_age
    }

    fn expire(&self, map: &mut HashMap<[u8; 32], Session>, now: Instant) {
        map.retain(|_, s| self.is_live(s, now));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        // Every change to the map is a single insert or remove: a panic elsewhere while the
        // lock was held leaves it whole.
        self.by_hash.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn hash(token: &str) -> [u8; 32] {
    *blake3::hash(token.as_bytes()).as_bytes()
}

fn random_token(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::rng().random();
    format!(
        "{prefix}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_resolves_until_it_ends() {
        let s = Sessions::default();
        let (token, session) = s.start("zhangsan", 0);
        assert!(token.starts_with(TOKEN_PREFIX));
        assert_eq!(s.resolve(&token).unwrap().account, "zhangsan");
        assert_eq!(s.resolve(&token).unwrap().csrf, session.csrf);
        assert!(s.resolve("hts_forged").is_none());
        assert!(s.resolve(&token[TOKEN_PREFIX.len()..]).is_none());
        assert!(s.end(&token));
        assert!(s.resolve(&token).is_none());
    }

    #[test]
    fn idle_sessions_end() {
        let s = Sessions::new(Duration::ZERO, DEFAULT_MAX_AGE);
        let (token, _) = s.start("zhangsan", 0);
        assert!(s.resolve(&token).is_none());
        let s = Sessions::new(DEFAULT_IDLE, Duration::ZERO);
        let (token, _) = s.start("zhangsan", 0);
        assert!(s.resolve(&token).is_none());
    }

    #[test]
    fn an_account_holds_a_bounded_number_and_all_end_together() {
        let s = Sessions::default();
        let tokens: Vec<String> = (0..MAX_PER_ACCOUNT + 2)
            .map(|_| s.start("zhangsan", 0).0)
            .collect();
        assert_eq!(s.count("zhangsan"), MAX_PER_ACCOUNT);
        // The newest are the ones kept.
        assert!(s.resolve(tokens.last().unwrap()).is_some());
        let other = s.start("lisi", 0).0;
        assert_eq!(s.end_all("zhangsan"), MAX_PER_ACCOUNT);
        assert!(s.resolve(tokens.last().unwrap()).is_none());
        assert!(s.resolve(&other).is_some());
    }
}
