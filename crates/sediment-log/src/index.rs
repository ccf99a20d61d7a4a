//! Sparse indexes of one segment, kept in memory and written to disk when the segment is sealed.
//!
//! - Offset index (`.index`): entries of (offset - base offset: u32, file position: u32), 8 bytes
//!   each, big-endian, one every `index.interval.bytes` of log. Each entry points at the *start of
//!   a batch* whose base offset is the entry's offset, so a lookup lands on a batch boundary.
//! - Time index (`.timeindex`): entries of (timestamp: i64, offset - base offset: u32), 12 bytes
//!   each. The timestamp is the running maximum of batch max timestamps up to and including the
//!   batch that starts at that offset, so timestamps never decrease along the index.
//!
//! The active segment's indexes are rebuilt from the log on start-up, so only sealed segments
//! persist them; a missing or inconsistent index file is rebuilt from the log.

/// (relative offset, position) pairs, strictly increasing in both.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct OffsetIndex {
    entries: Vec<(u32, u32)>,
}

impl OffsetIndex {
    pub(crate) fn append(&mut self, relative_offset: u32, position: u32) {
        debug_assert!(
            self.entries
                .last()
                .is_none_or(|&(o, p)| o < relative_offset && p < position)
        );
        self.entries.push((relative_offset, position));
    }

    /// Largest entry whose offset is at most `relative_offset`, or (0, 0).
    pub(crate) fn lookup(&self, relative_offset: u32) -> (u32, u32) {
        let i = self.entries.partition_point(|&(o, _)| o <= relative_offset);
        if i == 0 { (0, 0) } else { self.entries[i - 1] }
    }

    pub(crate) fn last(&self) -> Option<(u32, u32)> {
        self.entries.last().copied()
    }

    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * 8);
        for &(o, p) in &self.entries {
            out.extend_from_slice(&o.to_be_bytes());
            out.extend_from_slice(&p.to_be_bytes());
        }
        out
    }

    /// Decodes and checks monotonicity and that positions fall inside `log_size`.
    pub(crate) fn from_bytes(bytes: &[u8], log_size: u64) -> Result<Self, String> {
        if !bytes.len().is_multiple_of(8) {
            return Err(format!(
                "offset index size {} is not a multiple of 8",
                bytes.len()
            ));
        }
        let mut index = Self::default();
        for chunk in bytes.chunks_exact(8) {
            let o = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            let p = u32::from_be_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
            if u64::from(p) >= log_size {
                return Err(format!(
                    "offset index position {p} beyond log size {log_size}"
                ));
            }
            if let Some((lo, lp)) = index.last()
                && (o <= lo || p <= lp)
            {
                return Err(format!("offset index not increasing at offset {o}"));
            }
            index.entries.push((o, p));
        }
        Ok(index)
    }
}

/// (running max timestamp, relative offset) pairs; timestamps non-decreasing, offsets increasing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct TimeIndex {
    entries: Vec<(i64, u32)>,
}

impl TimeIndex {
    /// Appends if `timestamp` is larger than the last entry's (otherwise the entry adds nothing).
    pub(crate) fn maybe_append(&mut self, timestamp: i64, relative_offset: u32) {
        match self.entries.last() {
            Some(&(t, o)) if timestamp <= t || relative_offset <= o => {}
            _ => self.entries.push((timestamp, relative_offset)),
        }
    }

    /// Relative offset to start scanning from to find the first batch with a max timestamp of at
    /// least `timestamp`: the last entry whose timestamp is below it (every batch up to that
    /// entry's batch, inclusive, is older), or 0.
    pub(crate) fn scan_start(&self, timestamp: i64) -> u32 {
        let i = self.entries.partition_point(|&(t, _)| t < timestamp);
        if i == 0 { 0 } else { self.entries[i - 1].1 }
    }

    pub(crate) fn last(&self) -> Option<(i64, u32)> {
        self.entries.last().copied()
    }

    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * 12);
        for &(t, o) in &self.entries {
            out.extend_from_slice(&t.to_be_bytes());
            out.extend_from_slice(&o.to_be_bytes());
        }
        out
    }

    /// Decodes and checks ordering and that offsets fall below `max_relative_offset`.
    pub(crate) fn from_bytes(bytes: &[u8], max_relative_offset: u32) -> Result<Self, String> {
        if !bytes.len().is_multiple_of(12) {
            return Err(format!(
                "time index size {} is not a multiple of 12",
                bytes.len()
            ));
        }
        let mut index = Self::default();
        for chunk in bytes.chunks_exact(12) {
            let mut t = [0u8; 8];
            t.copy_from_slice(&chunk[..8]);
            let t = i64::from_be_bytes(t);
            let o = u32::from_be_bytes([chunk[8], chunk[9], chunk[10], chunk[11]]);
            if o > max_relative_offset {
                return Err(format!("time index offset {o} beyond segment end"));
            }
            if let Some((lt, lo)) = index.last()
                && (t < lt || o <= lo)
            {
                return Err(format!("time index not ordered at offset {o}"));
            }
            index.entries.push((t, o));
        }
        Ok(index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn offset_lookup_finds_floor_entry() {
        let mut idx = OffsetIndex::default();
        idx.append(10, 4096);
        idx.append(20, 8192);
        assert_eq!(idx.lookup(0), (0, 0));
        assert_eq!(idx.lookup(9), (0, 0));
        assert_eq!(idx.lookup(10), (10, 4096));
        assert_eq!(idx.lookup(19), (10, 4096));
        assert_eq!(idx.lookup(1000), (20, 8192));
    }

    #[test]
    fn time_scan_start_skips_older_batches() {
        let mut idx = TimeIndex::default();
        idx.maybe_append(100, 0);
        idx.maybe_append(90, 5); // not larger: ignored
        idx.maybe_append(200, 10);
        idx.maybe_append(300, 20);
        assert_eq!(idx.to_bytes().len(), 36);
        assert_eq!(idx.scan_start(50), 0);
        assert_eq!(idx.scan_start(150), 0);
        assert_eq!(idx.scan_start(201), 10);
        assert_eq!(idx.scan_start(10_000), 20);
    }

    #[test]
    fn rejects_inconsistent_files() {
        let mut idx = OffsetIndex::default();
        idx.append(1, 100);
        idx.append(2, 200);
        let bytes = idx.to_bytes();
        assert!(
            OffsetIndex::from_bytes(&bytes, 150).is_err(),
            "position beyond log"
        );
        assert!(
            OffsetIndex::from_bytes(&bytes[..7], 1000).is_err(),
            "partial entry"
        );
        let mut swapped = bytes[8..].to_vec();
        swapped.extend_from_slice(&bytes[..8]);
        assert!(
            OffsetIndex::from_bytes(&swapped, 1000).is_err(),
            "not increasing"
        );
    }

    proptest! {
        #[test]
        fn offset_index_round_trips(mut pairs in proptest::collection::vec((0u32..1_000_000, 0u32..1_000_000), 0..64)) {
            pairs.sort();
            pairs.dedup_by_key(|p| p.0);
            let mut positions: Vec<u32> = pairs.iter().map(|p| p.1).collect();
            positions.sort();
            positions.dedup();
            let mut idx = OffsetIndex::default();
            for (i, (o, _)) in pairs.iter().enumerate().take(positions.len()) {
                idx.append(*o, positions[i]);
            }
            let back = OffsetIndex::from_bytes(&idx.to_bytes(), u64::from(u32::MAX)).unwrap();
            prop_assert_eq!(back, idx);
        }

        #[test]
        fn time_index_round_trips(ts in proptest::collection::vec(0i64..1_000_000, 0..64)) {
            let mut idx = TimeIndex::default();
            for (i, t) in ts.iter().enumerate() {
                idx.maybe_append(*t, i as u32);
            }
            let back = TimeIndex::from_bytes(&idx.to_bytes(), u32::MAX).unwrap();
            prop_assert_eq!(back, idx);
        }
    }
}
