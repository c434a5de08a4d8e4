//! Byte encodings of keys and values: MessagePack (rmp-serde) for records and domain keys,
//! big-endian integers for the journal's ordered keys and the meta counters.
//!
//! Why MessagePack and not postcard or bincode: the core's `BindingStatus` is an internally
//! tagged serde enum (`tag = "state"`), which only self-describing formats can decode
//! (postcard answers `WontImplement`). rmp-serde writes structs as arrays, so it stays compact.
//! Encoding is deterministic for the core's types (no hash maps), so encoded domain values are
//! usable as keys; they are never range-scanned, so their byte order does not matter.

use exchange_core::person::PERSON_ID_LEN;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::StoreError;
use crate::{KEY_BYTES_MAX, VALUE_BYTES_MAX};

/// Encodes a record as a value, refusing values over `VALUE_BYTES_MAX`.
pub(crate) fn encode_value<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    let bytes = rmp_serde::to_vec(value).map_err(|error| StoreError::Encode {
        what,
        detail: error.to_string(),
    })?;
    if bytes.len() > VALUE_BYTES_MAX {
        return Err(StoreError::TooLarge {
            what,
            len: bytes.len(),
            max: VALUE_BYTES_MAX,
        });
    }
    Ok(bytes)
}

/// Encodes a domain id as a key, refusing keys over `KEY_BYTES_MAX`.
pub(crate) fn encode_key<T: Serialize>(what: &'static str, key: &T) -> Result<Vec<u8>, StoreError> {
    let bytes = rmp_serde::to_vec(key).map_err(|error| StoreError::Encode {
        what,
        detail: error.to_string(),
    })?;
    if bytes.len() > KEY_BYTES_MAX {
        return Err(StoreError::TooLarge {
            what,
            len: bytes.len(),
            max: KEY_BYTES_MAX,
        });
    }
    Ok(bytes)
}

/// Decodes a key or value read from `tree`. Garbage gives `Corrupt`, never a panic; trailing
/// bytes after a complete value are also corruption (a torn or mixed-up write).
pub(crate) fn decode<T: DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    let mut rest = bytes;
    let value = {
        // Reading through `&mut &[u8]` lets us see what is left afterwards; rmp-serde reads
        // length-prefixed items with `take(len)`, so a lying length cannot allocate more than
        // the input holds, and it limits nesting depth, so deep garbage cannot overflow the stack.
        let mut deserializer = rmp_serde::Deserializer::new(&mut rest);
        T::deserialize(&mut deserializer).map_err(|error| StoreError::Corrupt {
            tree,
            detail: error.to_string(),
        })?
    };
    if !rest.is_empty() {
        return Err(StoreError::Corrupt {
            tree,
            detail: format!("{} trailing bytes after the value", rest.len()),
        });
    }
    Ok(value)
}

/// Journal key: the sequence number, big-endian so byte order is numeric order.
pub(crate) fn journal_key(seq: u64) -> [u8; 8] {
    seq.to_be_bytes()
}

/// A key of the per-account journal index: the person id, then the sequence number
/// big-endian, so one person's entries are contiguous and in journal order.
pub(crate) fn account_journal_key(person: &[u8; PERSON_ID_LEN], seq: u64) -> [u8; PERSON_ID_LEN + 8] {
    let mut key = [0u8; PERSON_ID_LEN + 8];
    let (head, tail) = key.split_at_mut(PERSON_ID_LEN);
    head.copy_from_slice(person);
    tail.copy_from_slice(&seq.to_be_bytes());
    key
}

/// Reads an 8-byte big-endian integer (a journal key or a meta counter).
pub(crate) fn decode_u64(tree: &'static str, bytes: &[u8]) -> Result<u64, StoreError> {
    let array: [u8; 8] = bytes.try_into().map_err(|_| StoreError::Corrupt {
        tree,
        detail: format!("expected 8 bytes of big-endian integer, found {}", bytes.len()),
    })?;
    Ok(u64::from_be_bytes(array))
}

#[cfg(test)]
mod tests {
    use super::*;
    use exchange_core::binding::BindingStatus;

    #[test]
    fn internally_tagged_binding_status_round_trips() {
        for status in [BindingStatus::Active, BindingStatus::Revoked { at_wall_ms: -5 }] {
            let bytes = encode_value("status", &status).unwrap();
            assert_eq!(decode::<BindingStatus>("t", &bytes).unwrap(), status);
        }
    }

    #[test]
    fn trailing_bytes_are_corruption() {
        let mut bytes = encode_value("n", &7u32).unwrap();
        bytes.push(0);
        assert!(matches!(decode::<u32>("t", &bytes), Err(StoreError::Corrupt { .. })));
    }

    proptest::proptest! {
        /// Whatever bytes are on disk, decoding answers `Ok` or `Corrupt`, never panics.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = decode::<exchange_core::records::SettlementRecord>("settlements", &bytes);
            let _ = decode::<exchange_core::records::Fence>("fences", &bytes);
            let _ = decode::<exchange_core::records::JournalEntry>("journal", &bytes);
            let _ = decode::<exchange_core::binding::Binding>("bindings", &bytes);
            let _ = decode::<exchange_core::account::Account>("accounts", &bytes);
            let _ = decode::<exchange_core::ids::LegId>("live_holds", &bytes);
            let _ = decode::<exchange_core::records::OutboxKey>("outbox", &bytes);
            let _ = crate::account_value::decode_account("accounts", &bytes);
            let _ = crate::account_value::decode_tail("accounts", &bytes);
            let _ = crate::account_value::decode_page("account_journal", 7, &bytes);
            let _ = crate::journal_pages::decode_value("journal", &journal_key(7), &bytes);
            let _ = crate::journal_pages::decode_value("journal", &journal_key(u64::MAX), &bytes);
        }
    }

    #[test]
    fn journal_keys_sort_numerically() {
        assert!(journal_key(255) < journal_key(256));
        assert_eq!(decode_u64("journal", &journal_key(9)).unwrap(), 9);
        assert!(decode_u64("journal", &[1, 2]).is_err());
    }
}
