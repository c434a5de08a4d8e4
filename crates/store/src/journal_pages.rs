//! How the journal is stored: one key per write set's run of entries, not one per entry.
//!
//! Why: sled 0.34 keeps ~30 bytes of memory per key for as long as the key exists (see
//! `account_value.rs`), and the journal only grows. A write set with one entry (every
//! settlement leg) stores it as before: the entry under its sequence number. A write set with
//! more (a bulk import, a batch of credits) stores them as pages of consecutive entries under
//! the first one's sequence number, up to `JOURNAL_PAGE_ENTRIES_MAX` entries and about
//! `JOURNAL_PAGE_BYTES_MAX` bytes: sled rewrites a leaf of up to 17 values as one log item, and
//! one over ~128 KiB becomes a blob file (slow; see `durability.rs`), so 16 full pages must
//! stay under it.
//!
//! Encoding: a single entry is the core's record (MessagePack); a page is the byte 0xc1 (never
//! used by MessagePack, so no single entry starts with it) followed by a MessagePack array of
//! the records. A key's sequence number is its first entry's; the next key starts after its
//! last.

use exchange_core::records::JournalEntry;

use crate::StoreError;
use crate::codec::{decode, decode_u64};

/// Most entries in one stored page.
pub const JOURNAL_PAGE_ENTRIES_MAX: usize = 64;
/// Most bytes (about) of one stored page (see the module's comment).
pub const JOURNAL_PAGE_BYTES_MAX: usize = 6 * 1024;

/// First byte of a page (a MessagePack "never used" marker).
const PAGE_MARKER: u8 = 0xc1;

/// Groups a write set's encoded entries (in order) into stored values: runs of consecutive
/// entries, each run's value and how many entries it holds.
pub(crate) fn paginate(entries: &[Vec<u8>]) -> Vec<(usize, Vec<u8>)> {
    let mut values = Vec::new();
    let mut start = 0;
    while start < entries.len() {
        let mut end = start + 1;
        let mut bytes = entries[start].len();
        while end < entries.len()
            && end - start < JOURNAL_PAGE_ENTRIES_MAX
            && bytes + entries[end].len() <= JOURNAL_PAGE_BYTES_MAX
        {
            bytes += entries[end].len();
            end += 1;
        }
        let run = &entries[start..end];
        let value = if run.len() == 1 {
            run[0].clone()
        } else {
            let mut value = Vec::with_capacity(bytes + 4);
            value.push(PAGE_MARKER);
            // A MessagePack array header: fixarray below 16 elements, array16 above.
            match u8::try_from(run.len()) {
                Ok(len) if len < 16 => value.push(0x90 | len),
                _ => {
                    value.push(0xdc);
                    // At most JOURNAL_PAGE_ENTRIES_MAX elements, far below u16::MAX.
                    value.extend_from_slice(&u16::try_from(run.len()).unwrap_or(u16::MAX).to_be_bytes());
                }
            }
            for entry in run {
                value.extend_from_slice(entry);
            }
            value
        };
        values.push((run.len(), value));
        start = end;
    }
    values
}

/// The entries stored under one key, with their sequence numbers.
pub(crate) fn decode_value(
    tree: &'static str,
    key: &[u8],
    value: &[u8],
) -> Result<Vec<(u64, JournalEntry)>, StoreError> {
    let first = decode_u64(tree, key)?;
    let entries: Vec<JournalEntry> = match value.split_first() {
        Some((&PAGE_MARKER, page)) => decode(tree, page)?,
        _ => vec![decode(tree, value)?],
    };
    let mut numbered = Vec::with_capacity(entries.len());
    for (offset, entry) in entries.into_iter().enumerate() {
        let seq = u64::try_from(offset)
            .ok()
            .and_then(|offset| first.checked_add(offset))
            .ok_or_else(|| StoreError::Corrupt {
                tree,
                detail: format!("journal page under {first} runs past the last sequence number"),
            })?;
        numbered.push((seq, entry));
    }
    Ok(numbered)
}

/// The sequence number of the last entry stored under `key` (a page's last).
pub(crate) fn last_seq(tree: &'static str, key: &[u8], value: &[u8]) -> Result<u64, StoreError> {
    let entries = decode_value(tree, key, value)?;
    entries.last().map(|(seq, _)| *seq).ok_or_else(|| StoreError::Corrupt {
        tree,
        detail: "an empty journal page".to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{encode_value, journal_key};
    use exchange_core::money::Money;
    use exchange_core::records::JournalKind;

    fn entry(fen: u64, reference_bytes: usize) -> JournalEntry {
        JournalEntry {
            kind: JournalKind::Credit,
            wall_ms: 1,
            amount: Money::from_fen(fen).unwrap(),
            account: None,
            leg: None,
            binding: None,
            settlement: None,
            counterparty: None,
            reference: Some("r".repeat(reference_bytes)),
        }
    }

    #[test]
    fn runs_are_split_by_count_and_bytes_and_read_back_in_order() {
        for (count, reference_bytes) in [
            (1usize, 10usize),
            (9, 10),
            (15, 10),
            (16, 10),
            (200, 10),
            (40, 1_000),
            (3, 7_000),
        ] {
            let entries: Vec<JournalEntry> = (0..count as u64).map(|fen| entry(fen, reference_bytes)).collect();
            let encoded: Vec<Vec<u8>> = entries.iter().map(|entry| encode_value("e", entry).unwrap()).collect();
            let mut seq = 100u64;
            let mut read = Vec::new();
            for (len, value) in paginate(&encoded) {
                assert!(len <= JOURNAL_PAGE_ENTRIES_MAX);
                assert!(
                    len == 1 || value.len() <= JOURNAL_PAGE_BYTES_MAX + 4,
                    "{} bytes",
                    value.len()
                );
                let stored = decode_value("j", &journal_key(seq), &value).unwrap();
                assert_eq!(stored.len(), len);
                assert_eq!(last_seq("j", &journal_key(seq), &value).unwrap(), seq + len as u64 - 1);
                read.extend(stored);
                seq += len as u64;
            }
            let expected: Vec<(u64, JournalEntry)> = (100..).zip(entries).collect();
            assert_eq!(read, expected, "{count} entries of {reference_bytes} B");
        }
    }

    #[test]
    fn garbage_is_corrupt_not_a_panic() {
        for value in [&[0xc1][..], &[0xc1, 0x92, 0x01][..], &[0x99][..], &[][..]] {
            assert!(decode_value("j", &journal_key(1), value).is_err(), "{value:?}");
        }
        assert!(decode_value("j", b"short", &[0xc1, 0x90]).is_err());
        // An empty page decodes to nothing, and has no last entry.
        assert!(last_seq("j", &journal_key(1), &[0xc1, 0x90]).is_err());
    }
}
