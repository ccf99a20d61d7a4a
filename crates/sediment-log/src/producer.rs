//! Per-partition state of idempotent producers: for every producer id, its current epoch and
//! the sequence ranges of its last five batches, with the offsets they were written at.
//!
//! This is what lets the log acknowledge a retried batch without appending it twice, and refuse
//! a batch that skips sequences (OUT_OF_ORDER_SEQUENCE_NUMBER) or comes from a fenced epoch
//! (INVALID_PRODUCER_EPOCH), the rules of Kafka's `ProducerStateManager`. The state is derived
//! from the batches in the log: on start-up it is rebuilt from the newest snapshot plus a scan of
//! the batches after it (snapshots are written when a segment is sealed and on clean shutdown).
//!
//! Snapshot file (`<20-digit offset>.snapshot`, all integers big-endian):
//! `version u16 | offset i64 | producers u32 | { producer_id i64 | epoch i16 | last_timestamp i64
//! | batches u8 | { first_seq i32 | last_seq i32 | first_offset i64 | last_offset i64 |
//! timestamp i64 } }* | crc32c u32` (the CRC covers everything before it).

use std::collections::{HashMap, VecDeque};

use crate::error::{LogError, Result};

/// Batches remembered per producer (Kafka's limit on in-flight requests per connection is 5).
pub const MAX_CACHED_BATCHES: usize = 5;

const SNAPSHOT_VERSION: u16 = 1;

/// One batch an idempotent producer wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerBatch {
    /// Sequence of the first record.
    pub first_seq: i32,
    /// Sequence of the last record (wraps after `i32::MAX`).
    pub last_seq: i32,
    /// Offset of the first record.
    pub first_offset: i64,
    /// Offset of the last record.
    pub last_offset: i64,
    /// Max timestamp of the batch.
    pub timestamp: i64,
}

/// What the log knows of one producer id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerEntry {
    /// Current epoch.
    pub epoch: i16,
    /// Newest batches, oldest first, at most [`MAX_CACHED_BATCHES`].
    pub batches: VecDeque<ProducerBatch>,
    /// Largest timestamp written; entries idle longer than `producer.id.expiration.ms` expire.
    pub last_timestamp: i64,
}

/// The verdict on a batch about to be appended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Not an idempotent batch, or the next one in sequence: append it.
    Append,
    /// A retry of a batch already in the log: acknowledge it with its original offsets.
    Duplicate(ProducerBatch),
}

/// Sequence of the last record of a batch whose first is `first` and whose last offset delta is
/// `delta`: sequences wrap from `i32::MAX` to 0.
pub fn last_sequence(first: i32, delta: i32) -> i32 {
    let sum = i64::from(first) + i64::from(delta);
    if sum > i64::from(i32::MAX) {
        (sum - i64::from(i32::MAX) - 1) as i32
    } else {
        sum as i32
    }
}

fn next_sequence(seq: i32) -> i32 {
    if seq == i32::MAX { 0 } else { seq + 1 }
}

/// All producers of one partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
}

impl ProducerStates {
    /// Number of producer ids tracked.
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Whether no producer is tracked.
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// The entry of `producer_id`.
    pub fn get(&self, producer_id: i64) -> Option<&ProducerEntry> {
        self.producers.get(&producer_id)
    }

    /// Decides what to do with a batch from `producer_id`/`epoch` carrying sequences
    /// `first_seq..=last_seq`. A producer the log has never seen (or has expired) may start at
    /// any sequence, as in Kafka, so a producer whose state was removed by retention can go on.
    pub fn check(
        &self,
        producer_id: i64,
        epoch: i16,
        first_seq: i32,
        last_seq: i32,
    ) -> Result<SequenceCheck> {
        let Some(entry) = self.producers.get(&producer_id) else {
            return Ok(SequenceCheck::Append);
        };
        if epoch < entry.epoch {
            return Err(LogError::InvalidProducerEpoch {
                producer_id,
                epoch,
                current: entry.epoch,
            });
        }
        if epoch > entry.epoch {
            // A bumped epoch starts its sequences again at 0.
            if first_seq != 0 {
                return Err(LogError::OutOfOrderSequence {
                    producer_id,
                    expected: 0,
                    got: first_seq,
                });
            }
            return Ok(SequenceCheck::Append);
        }
        if let Some(b) = entry
            .batches
            .iter()
            .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
        {
            return Ok(SequenceCheck::Duplicate(*b));
        }
        match entry.batches.back() {
            Some(last) if first_seq != next_sequence(last.last_seq) => {
                Err(LogError::OutOfOrderSequence {
                    producer_id,
                    expected: next_sequence(last.last_seq),
                    got: first_seq,
                })
            }
            _ => Ok(SequenceCheck::Append),
        }
    }

    /// Records a batch written to the log (after [`check`](Self::check) said `Append`, or while
    /// rebuilding from the log).
    pub fn record(&mut self, producer_id: i64, epoch: i16, batch: ProducerBatch) {
        let entry = self
            .producers
            .entry(producer_id)
            .or_insert_with(|| ProducerEntry {
                epoch,
                batches: VecDeque::with_capacity(MAX_CACHED_BATCHES),
                last_timestamp: batch.timestamp,
            });
        if entry.epoch != epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        if entry.batches.len() == MAX_CACHED_BATCHES {
            entry.batches.pop_front();
        }
        entry.batches.push_back(batch);
        entry.last_timestamp = entry.last_timestamp.max(batch.timestamp);
    }

    /// Forgets producers whose newest timestamp is older than `before_ms`. Returns how many.
    pub fn expire(&mut self, before_ms: i64) -> usize {
        let n = self.producers.len();
        self.producers.retain(|_, e| e.last_timestamp >= before_ms);
        n - self.producers.len()
    }

    /// The snapshot file contents for the state as of `offset`.
    pub fn encode(&self, offset: i64) -> Vec<u8> {
        let mut out = Vec::with_capacity(18 + self.producers.len() * 64);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&offset.to_be_bytes());
        out.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        let mut ids: Vec<_> = self.producers.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let e = &self.producers[&id];
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&e.epoch.to_be_bytes());
            out.extend_from_slice(&e.last_timestamp.to_be_bytes());
            out.push(e.batches.len() as u8);
            for b in &e.batches {
                out.extend_from_slice(&b.first_seq.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.first_offset.to_be_bytes());
                out.extend_from_slice(&b.last_offset.to_be_bytes());
                out.extend_from_slice(&b.timestamp.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    /// Parses a snapshot: (offset it was taken at, state).
    pub fn decode(bytes: &[u8]) -> Result<(i64, Self)> {
        let bad = |why: &str| LogError::CorruptBatch(format!("producer snapshot: {why}"));
        if bytes.len() < 18 {
            return Err(bad("too short"));
        }
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        if crc32c::crc32c(body).to_be_bytes() != crc {
            return Err(bad("crc mismatch"));
        }
        let mut r = Reader(body);
        if r.u16()? != SNAPSHOT_VERSION {
            return Err(bad("unknown version"));
        }
        let offset = r.i64()?;
        let count = r.u32()?;
        let mut producers = HashMap::new();
        for _ in 0..count {
            let id = r.i64()?;
            let epoch = r.i16()?;
            let last_timestamp = r.i64()?;
            let n = r.u8()?;
            let mut batches = VecDeque::with_capacity(usize::from(n));
            for _ in 0..n {
                batches.push_back(ProducerBatch {
                    first_seq: r.i32()?,
                    last_seq: r.i32()?,
                    first_offset: r.i64()?,
                    last_offset: r.i64()?,
                    timestamp: r.i64()?,
                });
            }
            producers.insert(
                id,
                ProducerEntry {
                    epoch,
                    batches,
                    last_timestamp,
                },
            );
        }
        if !r.0.is_empty() {
            return Err(bad("trailing bytes"));
        }
        Ok((offset, Self { producers }))
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N]> {
        if self.0.len() < N {
            return Err(LogError::CorruptBatch(
                "producer snapshot: truncated".into(),
            ));
        }
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        Ok(head.try_into().expect("split at N"))
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take::<1>()?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.take()?))
    }
    fn i16(&mut self) -> Result<i16> {
        Ok(i16::from_be_bytes(self.take()?))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.take()?))
    }
    fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(self.take()?))
    }
    fn i64(&mut self) -> Result<i64> {
        Ok(i64::from_be_bytes(self.take()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(first_seq: i32, last_seq: i32, first_offset: i64) -> ProducerBatch {
        ProducerBatch {
            first_seq,
            last_seq,
            first_offset,
            last_offset: first_offset + i64::from(last_seq - first_seq),
            timestamp: 1000 + first_offset,
        }
    }

    #[test]
    fn in_sequence_batches_append_and_retries_are_duplicates() {
        let mut s = ProducerStates::default();
        assert_eq!(s.check(7, 0, 0, 9).unwrap(), SequenceCheck::Append);
        s.record(7, 0, batch(0, 9, 100));
        assert_eq!(s.check(7, 0, 10, 19).unwrap(), SequenceCheck::Append);
        s.record(7, 0, batch(10, 19, 110));
        assert_eq!(
            s.check(7, 0, 0, 9).unwrap(),
            SequenceCheck::Duplicate(batch(0, 9, 100))
        );
        assert_eq!(
            s.check(7, 0, 10, 19).unwrap(),
            SequenceCheck::Duplicate(batch(10, 19, 110))
        );
    }

    #[test]
    fn gaps_and_stale_epochs_are_refused() {
        let mut s = ProducerStates::default();
        s.record(7, 3, batch(0, 4, 0));
        assert!(matches!(
            s.check(7, 3, 6, 8),
            Err(LogError::OutOfOrderSequence {
                expected: 5,
                got: 6,
                ..
            })
        ));
        assert!(matches!(
            s.check(7, 2, 5, 8),
            Err(LogError::InvalidProducerEpoch {
                epoch: 2,
                current: 3,
                ..
            })
        ));
        // A new epoch must start at 0, and then replaces the old one's batches.
        assert!(matches!(
            s.check(7, 4, 5, 8),
            Err(LogError::OutOfOrderSequence { expected: 0, .. })
        ));
        assert_eq!(s.check(7, 4, 0, 1).unwrap(), SequenceCheck::Append);
        s.record(7, 4, batch(0, 1, 5));
        assert_eq!(s.get(7).unwrap().batches.len(), 1);
        // An unknown producer may start anywhere.
        assert_eq!(s.check(8, 0, 42, 50).unwrap(), SequenceCheck::Append);
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let mut s = ProducerStates::default();
        for i in 0..7 {
            s.record(1, 0, batch(i * 2, i * 2 + 1, i64::from(i) * 2));
        }
        assert_eq!(s.get(1).unwrap().batches.len(), MAX_CACHED_BATCHES);
        // The oldest retained one is still a duplicate; an evicted one is out of order.
        assert!(matches!(
            s.check(1, 0, 4, 5).unwrap(),
            SequenceCheck::Duplicate(_)
        ));
        assert!(s.check(1, 0, 0, 1).is_err());
    }

    #[test]
    fn sequences_wrap_after_i32_max() {
        assert_eq!(last_sequence(i32::MAX - 1, 3), 1);
        assert_eq!(last_sequence(5, 0), 5);
        let mut s = ProducerStates::default();
        s.record(1, 0, batch(i32::MAX - 1, i32::MAX, 0));
        assert_eq!(s.check(1, 0, 0, 3).unwrap(), SequenceCheck::Append);
    }

    #[test]
    fn snapshots_round_trip_and_detect_corruption() {
        let mut s = ProducerStates::default();
        s.record(1, 0, batch(0, 4, 0));
        s.record(1, 0, batch(5, 9, 5));
        s.record(99, 7, batch(100, 100, 10));
        let bytes = s.encode(11);
        assert_eq!(ProducerStates::decode(&bytes).unwrap(), (11, s.clone()));
        for i in [0, 5, bytes.len() / 2, bytes.len() - 1] {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(ProducerStates::decode(&bad).is_err(), "flip at {i}");
        }
        assert!(ProducerStates::decode(&bytes[..bytes.len() - 3]).is_err());
        assert_eq!(
            ProducerStates::decode(&ProducerStates::default().encode(0)).unwrap(),
            (0, ProducerStates::default())
        );
    }

    #[test]
    fn idle_producers_expire() {
        let mut s = ProducerStates::default();
        s.record(1, 0, batch(0, 0, 0)); // timestamp 1000
        s.record(2, 0, batch(0, 0, 5000)); // timestamp 6000
        assert_eq!(s.expire(2000), 1);
        assert!(s.get(1).is_none() && s.get(2).is_some());
    }
}
