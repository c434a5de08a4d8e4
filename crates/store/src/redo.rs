//! The redo record: how a write set stays atomic across a crash without a sled transaction.
//!
//! Why not a sled transaction: in sled 0.34.7 every transaction (and every `apply_batch`)
//! "pins the log": it seals the current I/O buffer twice and writes each sealed buffer with a
//! synchronous `sync_file_range` on sled's thread pool, whose every job wakes all its idle
//! threads. Measured on the benchmark cluster that was ~7,000 synchronous disk writes a second
//! on the busiest node at 2,500 settlements/s, and most of the cluster's CPU time in the kernel.
//!
//! What we do instead, relying on two facts: every write goes through the store's one writer
//! lock, so sled sees our inserts in apply order; and sled recovers, after a crash, a prefix of
//! the operations it was given, in that order (its log is replayed up to the first write that
//! did not reach the disk). Before the trees are touched, the whole resolved write set (every
//! put and remove, with journal sequence numbers already assigned) is stored under one key of
//! the `redo` tree (one insert, atomic on its own); then each put and remove is applied as a
//! plain insert. A crash can therefore tear only the set whose redo record is the last one
//! written, and that record is still there: at open the store applies it again (puts and
//! removes of whole values, so applying it twice is the same as once) and flushes. Every
//! earlier set is complete, since its successor's redo record was written after all of it.
//!
//! One key is enough: a set's redo record is overwritten only by the next set's, which is
//! written after every insert of the earlier set.

use crate::error::StoreError;

/// The redo tree's one key.
pub(crate) const REDO_KEY: &[u8] = b"last";
/// Format version, first byte of every record.
const REDO_FORMAT_V1: u8 = 1;
const KIND_PUT: u8 = 0;
const KIND_REMOVE: u8 = 1;

/// One resolved change: a whole value put under a key of a tree, or a key removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct RedoOp {
    /// Index of the tree in the store's tree list.
    pub(crate) tree: u8,
    pub(crate) key: Vec<u8>,
    /// `None`: remove the key.
    pub(crate) value: Option<Vec<u8>>,
}

/// Appends a length as 4 bytes big-endian; lengths here are bounded far below `u32::MAX`
/// (keys by `KEY_BYTES_MAX`, values by `VALUE_BYTES_MAX`), so a longer one is refused.
fn put_len(out: &mut Vec<u8>, len: usize) -> Result<(), StoreError> {
    let len = u32::try_from(len).map_err(|_| StoreError::TooLarge {
        what: "redo item",
        len,
        max: u32::MAX as usize,
    })?;
    out.extend_from_slice(&len.to_be_bytes());
    Ok(())
}

/// Encodes a set: version, op count, then per op the tree, the kind, the key and the value,
/// each length-prefixed.
pub(crate) fn encode(ops: &[RedoOp]) -> Result<Vec<u8>, StoreError> {
    let size: usize = ops
        .iter()
        .map(|op| 10 + op.key.len() + op.value.as_ref().map_or(0, |value| 4 + value.len()))
        .sum();
    let mut out = Vec::with_capacity(5 + size);
    out.push(REDO_FORMAT_V1);
    put_len(&mut out, ops.len())?;
    for op in ops {
        out.push(op.tree);
        out.push(if op.value.is_some() { KIND_PUT } else { KIND_REMOVE });
        put_len(&mut out, op.key.len())?;
        out.extend_from_slice(&op.key);
        if let Some(value) = &op.value {
            put_len(&mut out, value.len())?;
            out.extend_from_slice(value);
        }
    }
    Ok(out)
}

/// Reads the record back. Anything malformed is `Corrupt` with the reason, never a panic;
/// `trees` bounds the tree indices accepted.
pub(crate) fn decode(bytes: &[u8], trees: usize) -> Result<Vec<RedoOp>, StoreError> {
    let mut reader = Reader { rest: bytes };
    let version = reader.byte()?;
    if version != REDO_FORMAT_V1 {
        return Err(corrupt(format!("unknown redo format {version}")));
    }
    let count = reader.len()?;
    // Each op takes at least 10 bytes, so a lying count cannot make us reserve much.
    let mut ops = Vec::with_capacity(count.min(reader.rest.len() / 10));
    for _ in 0..count {
        let tree = reader.byte()?;
        if usize::from(tree) >= trees {
            return Err(corrupt(format!("redo names tree {tree}, the store has {trees}")));
        }
        let kind = reader.byte()?;
        let key_len = reader.len()?;
        let key = reader.take(key_len)?.to_vec();
        let value = match kind {
            KIND_PUT => {
                let value_len = reader.len()?;
                Some(reader.take(value_len)?.to_vec())
            }
            KIND_REMOVE => None,
            other => return Err(corrupt(format!("unknown redo op kind {other}"))),
        };
        ops.push(RedoOp { tree, key, value });
    }
    if !reader.rest.is_empty() {
        return Err(corrupt(format!(
            "{} trailing bytes after the redo ops",
            reader.rest.len()
        )));
    }
    Ok(ops)
}

fn corrupt(detail: String) -> StoreError {
    StoreError::Corrupt { tree: "redo", detail }
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], StoreError> {
        if len > self.rest.len() {
            return Err(corrupt(format!(
                "redo record cut short: {len} bytes wanted, {} left",
                self.rest.len()
            )));
        }
        let (head, tail) = self.rest.split_at(len);
        self.rest = tail;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, StoreError> {
        Ok(self.take(1)?[0])
    }

    fn len(&mut self) -> Result<usize, StoreError> {
        let bytes = self.take(4)?;
        let len = u32::from_be_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
        usize::try_from(len).map_err(|_| corrupt(format!("redo length {len} does not fit in memory")))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn op() -> impl Strategy<Value = RedoOp> {
        (
            0u8..18,
            proptest::collection::vec(any::<u8>(), 0..40),
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..200)),
        )
            .prop_map(|(tree, key, value)| RedoOp { tree, key, value })
    }

    proptest! {
        #[test]
        fn encode_then_decode_is_identity(ops in proptest::collection::vec(op(), 0..20)) {
            let bytes = encode(&ops).unwrap();
            prop_assert_eq!(decode(&bytes, 18).unwrap(), ops);
        }

        #[test]
        fn garbage_is_corrupt_never_a_panic(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Err(error) = decode(&bytes, 18) {
                prop_assert!(matches!(error, StoreError::Corrupt { tree: "redo", .. }), "{error}");
            }
        }

        #[test]
        fn every_cut_of_a_record_is_refused(ops in proptest::collection::vec(op(), 1..8), cut in any::<prop::sample::Index>()) {
            let bytes = encode(&ops).unwrap();
            let at = cut.index(bytes.len());
            prop_assert!(decode(&bytes[..at], 18).is_err());
        }
    }

    #[test]
    fn a_tree_the_store_does_not_have_is_refused() {
        let bytes = encode(&[RedoOp {
            tree: 17,
            key: b"k".to_vec(),
            value: None,
        }])
        .unwrap();
        let error = decode(&bytes, 17).unwrap_err();
        assert!(error.to_string().contains("tree 17"), "{error}");
    }
}
