//! The trace hash: a stable fingerprint of every event a run delivered, in order.
//!
//! FNV-1a (64 bit), written out here so that it never depends on a library's or the standard
//! library's (randomized) hasher: the same seed and the same code give the same hash on every
//! machine.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_fnv1a_reference_value() {
        let mut hash = TraceHash::default();
        hash.bytes(b"a");
        assert_eq!(hash.value(), 0xaf63_dc4c_8601_ec8c);
    }
}
