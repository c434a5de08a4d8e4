//! The trace hash: a stable fingerprint of every event a run delivered, in order, and of the
//! ledgers it left behind.
//!
//! Events are folded in with FNV-1a (64 bit): time, kind, node, message kind and the sizes of
//! each handler's output. At the end of the run, a [`Digest`] of every node's tables (accounts
//! and balances, bindings, fences with their amounts, settlement and refund records with their
//! ids and legs, the journal) is folded in too, so two runs that differ only in an amount or
//! an id hash differently. Both are written out here so that they never depend on a library's
//! or the standard library's (randomized) hasher: the same seed, the same code and the same
//! toolchain give the same hash on every machine.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Running hash of a run's events.
#[derive(Clone, Copy, Debug)]
pub struct TraceHash(u64);

impl Default for TraceHash {
    fn default() -> TraceHash {
        TraceHash(FNV_OFFSET)
    }
}

impl TraceHash {
    pub fn bytes(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(FNV_PRIME);
        }
    }

    pub fn u64(&mut self, value: u64) {
        self.bytes(&value.to_le_bytes());
    }

    pub fn text(&mut self, text: &str) {
        self.bytes(text.as_bytes());
        self.bytes(&[0xff]);
    }

    pub fn value(self) -> u64 {
        self.0
    }

    /// 16 hex digits, as printed in reports.
    pub fn hex(self) -> String {
        format!("{:016x}", self.0)
    }
}

/// A fast, deterministic `Hasher` for whole records (their derived `Hash`): one multiply per
/// 64-bit word instead of one per byte. Integers are taken little-endian and `usize`/`isize`
/// as 64 bits, so the result does not depend on the machine.
#[derive(Clone, Copy, Debug)]
pub struct Digest(u64);

const DIGEST_SEED: u64 = 0x243f_6a88_85a3_08d3;
const DIGEST_MUL: u64 = 0x9e37_79b9_7f4a_7c15;

impl Default for Digest {
    fn default() -> Digest {
        Digest(DIGEST_SEED)
    }
}

impl Digest {
    fn word(&mut self, word: u64) {
        self.0 = (self.0 ^ word).wrapping_mul(DIGEST_MUL).rotate_left(29);
    }
}

impl std::hash::Hasher for Digest {
    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^ (h >> 33)
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.word(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            // The length marks how many bytes the last word holds.
            self.word(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
        }
    }

    fn write_u8(&mut self, value: u8) {
        self.word(u64::from(value));
    }
    fn write_u16(&mut self, value: u16) {
        self.word(u64::from(value));
    }
    fn write_u32(&mut self, value: u32) {
        self.word(u64::from(value));
    }
    fn write_u64(&mut self, value: u64) {
        self.word(value);
    }
    fn write_u128(&mut self, value: u128) {
        self.word(value as u64);
        self.word((value >> 64) as u64);
    }
    fn write_usize(&mut self, value: usize) {
        self.word(value as u64);
    }
    fn write_i8(&mut self, value: i8) {
        self.word(value as u64);
    }
    fn write_i16(&mut self, value: i16) {
        self.word(value as u64);
    }
    fn write_i32(&mut self, value: i32) {
        self.word(value as u64);
    }
    fn write_i64(&mut self, value: i64) {
        self.word(value as u64);
    }
    fn write_i128(&mut self, value: i128) {
        self.write_u128(value as u128);
    }
    fn write_isize(&mut self, value: isize) {
        self.word(value as u64);
    }
}

#[cfg(test)]
mod tests {
    use std::hash::{Hash, Hasher};

    use super::*;

    fn digest<T: Hash>(value: &T) -> u64 {
        let mut digest = Digest::default();
        value.hash(&mut digest);
        digest.finish()
    }

    #[test]
    fn the_digest_sees_every_byte_and_value() {
        assert_eq!(digest(&("abc", 7u64)), digest(&("abc", 7u64)));
        assert_ne!(digest(&("abc", 7u64)), digest(&("abc", 8u64)));
        assert_ne!(digest(&"abcdefghi"), digest(&"abcdefghj"));
        assert_ne!(digest(&("ab", "c")), digest(&("a", "bc")));
        assert_ne!(digest(&[0u8; 3].as_slice()), digest(&[0u8; 4].as_slice()));
    }

    #[test]
    fn matches_the_fnv1a_reference_value() {
        let mut hash = TraceHash::default();
        hash.bytes(b"a");
        assert_eq!(hash.value(), 0xaf63_dc4c_8601_ec8c);
    }
}
