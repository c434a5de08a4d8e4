//! How an account is stored: the core's record followed by its journal index tail.
//!
//! Why the index lives in the account's value: sled 0.34 keeps ~30 bytes of memory per key
//! for as long as the key exists (its page table and segment bookkeeping: leaves split at 16
//! keys and every leaf is a page), so one index key per journal entry made a node's memory grow
//! with its history: measured, 2 M accounts with their opening credits took 192 MB after
//! opening with an index key per entry and the journal, against 62 MB for the accounts alone.
//! So the newest sequence numbers of an account's journal entries ride in the account's own
//! value (which a balance change writes anyway), and only every
//! `ACCOUNT_JOURNAL_TAIL_MAX` of them become one key of the `account_journal` tree: a page
//! of sequence numbers under (person, first seq). A person's history is the pages in key order,
//! then the tail.
//!
//! Encoding: a MessagePack array of two, the account as the core's record (exactly what a
//! plain account value was before) and the tail. A value that is a plain account (a store
//! written before this layout) reads as one with an empty tail; its index keys, one per entry
//! with an empty value, read as pages of one.

use exchange_core::account::Account;

use crate::codec::{decode, encode_value};
use crate::error::StoreError;

/// Most sequence numbers kept in an account's value before they move to a page of their own.
pub const ACCOUNT_JOURNAL_TAIL_MAX: usize = 16;

/// MessagePack's marker of an array of two elements (fixarray).
const PAIR_MARKER: u8 = 0x92;

/// The stored value of an account whose record is already encoded (`account_bytes`, as
/// `encode_value` gives it) and whose index tail is `tail`.
pub(crate) fn encode(account_bytes: &[u8], tail: &[u64]) -> Result<Vec<u8>, StoreError> {
    let tail_bytes = encode_value("account journal tail", &tail)?;
    let mut value = Vec::with_capacity(1 + account_bytes.len() + tail_bytes.len());
    value.push(PAIR_MARKER);
    value.extend_from_slice(account_bytes);
    value.extend_from_slice(&tail_bytes);
    Ok(value)
}

/// The account and its index tail.
pub(crate) fn decode_account(tree: &'static str, bytes: &[u8]) -> Result<(Account, Vec<u64>), StoreError> {
    if bytes.first() == Some(&PAIR_MARKER) {
        return decode(tree, bytes);
    }
    // A plain record (an account is an array of more than two fields, so never 0x92).
    Ok((decode(tree, bytes)?, Vec::new()))
}

/// The index tail alone (the account record is skipped, not built).
pub(crate) fn decode_tail(tree: &'static str, bytes: &[u8]) -> Result<Vec<u64>, StoreError> {
    if bytes.first() == Some(&PAIR_MARKER) {
        let (_, tail): (serde::de::IgnoredAny, Vec<u64>) = decode(tree, bytes)?;
        return Ok(tail);
    }
    decode::<Account>(tree, bytes)?;
    Ok(Vec::new())
}

/// The record part of a stored value, still encoded (for a value rewritten with a longer tail).
pub(crate) fn account_bytes(tree: &'static str, bytes: &[u8]) -> Result<Vec<u8>, StoreError> {
    let (account, _) = decode_account(tree, bytes)?;
    encode_value("account", &account)
}

/// Sequence numbers of one `account_journal` page: `first` is the one in its key. An empty
/// value is a page of one (the layout before pages).
pub(crate) fn decode_page(tree: &'static str, first: u64, bytes: &[u8]) -> Result<Vec<u64>, StoreError> {
    if bytes.is_empty() {
        return Ok(vec![first]);
    }
    let seqs: Vec<u64> = decode(tree, bytes)?;
    if seqs.first() != Some(&first) {
        return Err(StoreError::Corrupt {
            tree,
            detail: format!("index page under seq {first} starts with {:?}", seqs.first()),
        });
    }
    if seqs.windows(2).any(|pair| pair[0] >= pair[1]) {
        return Err(StoreError::Corrupt {
            tree,
            detail: format!("index page under seq {first} is not in ascending order"),
        });
    }
    Ok(seqs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use exchange_core::account::Scheme;
    use exchange_core::person::PersonId;
    use exchange_core::region::Province;

    fn account() -> Account {
        let province = Province::from_code(110_000).unwrap();
        let person = PersonId::from_body("11010119900101123").unwrap();
        Account::open(person, "Li".to_string(), province, Scheme::Employee, 0)
    }

    #[test]
    fn plain_and_paired_values_read_back() {
        let account = account();
        let plain = encode_value("account", &account).unwrap();
        assert_ne!(plain.first(), Some(&PAIR_MARKER));
        assert_eq!(decode_account("t", &plain).unwrap(), (account.clone(), Vec::new()));
        assert_eq!(decode_tail("t", &plain).unwrap(), Vec::<u64>::new());
        let paired = encode(&plain, &[3, 9]).unwrap();
        assert_eq!(decode_account("t", &paired).unwrap(), (account.clone(), vec![3, 9]));
        assert_eq!(decode_tail("t", &paired).unwrap(), vec![3, 9]);
        assert_eq!(account_bytes("t", &paired).unwrap(), plain);
        assert!(decode_tail("t", b"\x92garbage").is_err());
    }

    #[test]
    fn pages_read_back_and_a_misplaced_one_is_corrupt() {
        assert_eq!(decode_page("t", 7, &[]).unwrap(), vec![7]);
        let page = encode_value("page", &vec![7u64, 8, 12]).unwrap();
        assert_eq!(decode_page("t", 7, &page).unwrap(), vec![7, 8, 12]);
        assert!(decode_page("t", 8, &page).is_err());
        let unordered = encode_value("page", &vec![7u64, 12, 8]).unwrap();
        assert!(decode_page("t", 7, &unordered).is_err());
    }
}
