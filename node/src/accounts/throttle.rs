//! Sign-in throttling: password guessing is slowed per account and per source address.
//!
//! Per account (whether or not it exists, so the answer says nothing about which do): the
//! first [`FREE_FAILURES`] failed sign-ins in a row cost nothing; each further one locks the
//! account's sign-in for twice as long as the last, from 2 s up to [`MAX_LOCK`]. A success
//! clears the count. Per source address: at most [`FAILURES_PER_ADDRESS`] failures in
//! [`ADDRESS_WINDOW`] (loopback, where every local client shares one address, ten times that),
//! then that address waits for the window to pass. Both tables are bounded
//! ([`MAX_TRACKED`]): when full, entries that no longer lock anything are dropped, then the
//! oldest.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Failed sign-ins in a row an account may have before it is locked for a while.
pub const FREE_FAILURES: u32 = 5;
/// The longest lock of one account.
pub const MAX_LOCK: Duration = Duration::from_secs(15 * 60);
/// Failed sign-ins one source address may have per window.
pub const FAILURES_PER_ADDRESS: u32 = 30;
/// Failed sign-ins all loopback clients together may have per window.
pub const LOOPBACK_FAILURES_PER_WINDOW: u32 = 10 * FAILURES_PER_ADDRESS;
/// The window of [`FAILURES_PER_ADDRESS`].
pub const ADDRESS_WINDOW: Duration = Duration::from_secs(10 * 60);
/// Most accounts and addresses tracked each.
pub const MAX_TRACKED: usize = 10_000;

#[derive(Clone, Copy, Debug)]
struct Failures {
    count: u32,
    /// When this record stops slowing anyone (lock end, or window end).
    until: Instant,
    last: Instant,
}

/// The node's sign-in throttle.
#[derive(Default)]
pub struct Throttle {
    accounts: Mutex<HashMap<String, Failures>>,
    addresses: Mutex<HashMap<IpAddr, Failures>>,
}

impl Throttle {
    /// `Err(wait)` when a sign-in to `account` from `from` must wait that long first.
    pub fn check(&self, account: &str, from: IpAddr) -> Result<(), Duration> {
        let now = Instant::now();
        let wait_account = {
            let map = lock(&self.accounts);
            if full_of_locks(&map, &account.to_string(), now) {
                ADDRESS_WINDOW
            } else {
                map.get(account)
                    .filter(|f| f.count > FREE_FAILURES)
                    .map(|f| f.until.saturating_duration_since(now))
                    .unwrap_or_default()
            }
        };
        // Every client of a loopback API is 127.0.0.1: it gets a larger budget, so one local
        // process guessing does not lock everyone out at once, yet guessing from the host
        // stays bounded. The per-account locks hold everywhere.
        let budget = if from.is_loopback() {
            LOOPBACK_FAILURES_PER_WINDOW
        } else {
            FAILURES_PER_ADDRESS
        };
        let wait_address = lock(&self.addresses)
            .get(&from)
            .filter(|f| f.count >= budget)
            .map(|f| f.until.saturating_duration_since(now))
            .unwrap_or_default();
        let wait = wait_account.max(wait_address);
        if wait.is_zero() {
            Ok(())
        } else {
            Err(wait)
        }
    }

    /// Records a failed sign-in.
    pub fn failed(&self, account: &str, from: IpAddr) {
        let now = Instant::now();
        {
            let mut map = lock(&self.accounts);
            let key = account.to_string();
            make_room(&mut map, now, &key);
            // Still full (every record locks): not tracked, and `check` holds the name as
            // locked until room is made; the table never grows past its bound.
            if map.len() < MAX_TRACKED || map.contains_key(&key) {
                let f = map.entry(key).or_insert(Failures {
                    count: 0,
                    until: now,
                    last: now,
                });
                f.count = f.count.saturating_add(1);
                f.last = now;
                f.until = now + lock_for(f.count);
            }
        }
        self.failed_address(from);
    }

    /// Records a failed sign-in against the source address only (an account name no account
    /// can have).
    pub fn failed_address(&self, from: IpAddr) {
        let now = Instant::now();
        let mut map = lock(&self.addresses);
        make_room(&mut map, now, &from);
        if map.len() >= MAX_TRACKED && !map.contains_key(&from) {
            return;
        }
        let f = map.entry(from).or_insert(Failures {
            count: 0,
            until: now + ADDRESS_WINDOW,
            last: now,
        });
        if f.until <= now {
            // A new window.
            f.count = 0;
            f.until = now + ADDRESS_WINDOW;
        }
        f.count = f.count.saturating_add(1);
        f.last = now;
    }

    /// Records a successful sign-in: the account's failures are forgotten (not the address's).
    pub fn succeeded(&self, account: &str) {
        lock(&self.accounts).remove(account);
    }
}

/// How long an account is locked after its `count`-th failure in a row.
fn lock_for(count: u32) -> Duration {
    match count.checked_sub(FREE_FAILURES + 1) {
        None => Duration::ZERO,
        Some(n) => Duration::from_secs(2u64 << n.min(20)).min(MAX_LOCK),
    }
}

fn make_room<K: std::hash::Hash + Eq + Clone>(
    map: &mut HashMap<K, Failures>,
    now: Instant,
    key: &K,
) {
    if map.len() < MAX_TRACKED || map.contains_key(key) {
        return;
    }
    // Records whose lock or window has passed, and not touched for a full lock, slow nobody.
    map.retain(|_, f| f.until > now || now.duration_since(f.last) < MAX_LOCK);
    if map.len() >= MAX_TRACKED {
        // Never a record that still locks (a flood of new names must not reset a lock): the
        // oldest of those that lock nothing any more, if any.
        if let Some(k) = map
            .iter()
            .filter(|(_, f)| f.until <= now)
            .min_by_key(|(_, f)| f.last)
            .map(|(k, _)| k.clone())
        {
            map.remove(&k);
        }
    }
}

/// Whether the table is full of records that all still lock: a name not in it then waits, as
/// if locked, until room is made.
fn full_of_locks<K: std::hash::Hash + Eq>(
    map: &HashMap<K, Failures>,
    key: &K,
    now: Instant,
) -> bool {
    map.len() >= MAX_TRACKED && !map.contains_key(key) && map.values().all(|f| f.until > now)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each change is one insert, update or remove: a panic elsewhere leaves the table whole.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    #[test]
    fn an_account_is_locked_after_its_free_failures_and_cleared_by_success() {
        let t = Throttle::default();
        for _ in 0..FREE_FAILURES {
            assert!(t.check("zhangsan", HOME).is_ok());
            t.failed("zhangsan", HOME);
        }
        assert!(t.check("zhangsan", HOME).is_ok());
        t.failed("zhangsan", HOME);
        let wait = t.check("zhangsan", HOME).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(2),
            "{wait:?}"
        );
        // Another account from the same address is not locked.
        assert!(t.check("lisi", HOME).is_ok());
        t.succeeded("zhangsan");
        assert!(t.check("zhangsan", HOME).is_ok());
    }

    #[test]
    fn locks_double_up_to_the_cap() {
        assert_eq!(lock_for(FREE_FAILURES), Duration::ZERO);
        assert_eq!(lock_for(FREE_FAILURES + 1), Duration::from_secs(2));
        assert_eq!(lock_for(FREE_FAILURES + 2), Duration::from_secs(4));
        assert_eq!(lock_for(FREE_FAILURES + 5), Duration::from_secs(32));
        assert_eq!(lock_for(u32::MAX), MAX_LOCK);
    }

    #[test]
    fn an_address_guessing_across_accounts_is_slowed_and_loopback_has_a_larger_budget() {
        let t = Throttle::default();
        let remote = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 2));
        for i in 0..FAILURES_PER_ADDRESS {
            t.failed(&format!("user{i}"), remote);
            t.failed_address(HOME);
        }
        let wait = t.check("someone-else", remote).unwrap_err();
        assert!(wait > Duration::from_secs(60), "{wait:?}");
        let other = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 3));
        assert!(t.check("someone-else", other).is_ok());
        assert!(t.check("someone-else", HOME).is_ok());
        for _ in FAILURES_PER_ADDRESS..LOOPBACK_FAILURES_PER_WINDOW {
            t.failed_address(HOME);
        }
        assert!(t.check("someone-else", HOME).is_err());
    }

    #[test]
    fn a_flood_of_names_never_resets_a_lock() {
        let t = Throttle::default();
        let remote = IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 9));
        for _ in 0..=FREE_FAILURES {
            t.failed("target", remote);
        }
        let now = Instant::now();
        {
            let mut map = lock(&t.accounts);
            for i in 0..MAX_TRACKED {
                map.insert(
                    format!("junk{i}"),
                    Failures {
                        count: FREE_FAILURES + 1,
                        until: now + MAX_LOCK,
                        last: now,
                    },
                );
            }
        }
        t.failed("newcomer", remote);
        assert!(
            t.check("target", remote).is_err(),
            "the target's lock survives"
        );
        assert!(
            t.check("another", remote).is_err(),
            "a full table of locks holds new names"
        );
    }
}
