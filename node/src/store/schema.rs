//! The store's schema version and migrations.
//!
//! Version 1 is the first layout. Version 2 holds feed entries of layout 2 (each names the
//! charter version it is judged by) and every charter version (`charter/N`): a version-1 store's
//! entries cannot be judged or served to version-2 peers, so it is refused with what to do
//! rather than misread. A store written by a newer huitong is refused too.

use super::{Store, StoreError, CF_META};

/// The schema version this binary writes.
pub const SCHEMA_VERSION: u32 = 2;
const KEY: &[u8] = b"schema_version";

pub(super) fn migrate(store: &Store) -> Result<(), StoreError> {
    let cf = store.cf(CF_META);
    match store.db().get_cf(cf, KEY)? {
        None => {
            store.db().put_cf(cf, KEY, SCHEMA_VERSION.to_be_bytes())?;
            Ok(())
        }
        Some(v) => {
            let found = <[u8; 4]>::try_from(&v[..])
                .map(u32::from_be_bytes)
                .map_err(|_| StoreError::Corrupt {
                    cf: CF_META,
                    detail: "schema version is not 4 bytes".into(),
                })?;
            if found > SCHEMA_VERSION {
                return Err(StoreError::TooNew { found });
            }
            if found < SCHEMA_VERSION {
                return Err(StoreError::TooOld { found });
            }
            Ok(())
        }
    }
}
