//! The wall clock, in milliseconds since the Unix epoch: one definition for every module,
//! including the leaves below [`crate::state`] (the call log, backups).
//!
//! Layering: a leaf.

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
