//! Roll and retention decisions as pure functions of a segment list and the current time, so they
//! are tested without files or sleeping. [`crate::PartitionLog`] gathers the summaries and acts.

use crate::config::LogConfig;

/// What the decisions need to know about one segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentSummary {
    /// First offset of the segment.
    pub base_offset: i64,
    /// Offset after its last record.
    pub next_offset: i64,
    /// Size of the `.log` file.
    pub size_bytes: u64,
    /// Largest record timestamp, or -1 when empty.
    pub max_timestamp: i64,
    /// Wall-clock time the roll clock started: when the segment was created, or when the broker
    /// opened it after a restart. Kafka counts from the first record's timestamp instead; with
    /// replayed or mirrored history (old timestamps) that rolls a segment per batch, so Sediment
    /// uses the broker's clock.
    pub roll_reference_ms: i64,
}

impl SegmentSummary {
    fn is_empty(&self) -> bool {
        self.size_bytes == 0
    }
}

/// Whether the active segment must be rolled before appending `incoming_bytes` whose last offset
/// is `incoming_last_offset`: it would grow past `segment.bytes`, it is older than `segment.ms`,
/// or the relative offset would not fit the index's 32 bits. Never rolls an empty segment.
pub fn roll_due(
    active: &SegmentSummary,
    config: &LogConfig,
    incoming_bytes: u64,
    incoming_last_offset: i64,
    now_ms: i64,
) -> bool {
    if active.is_empty() {
        return false;
    }
    active.size_bytes + incoming_bytes > config.segment_bytes
        || now_ms - active.roll_reference_ms >= config.segment_ms
        || incoming_last_offset - active.base_offset > i64::from(i32::MAX)
}

/// How many of the oldest segments retention deletes, given `segments` oldest first with the
/// active segment last. Time retention (`retention.ms`) deletes a prefix of segments whose newest
/// record is older than the limit and may include the active segment, which the caller then
/// rolls first (so a quiet, fully expired partition empties, as in Kafka). Size retention
/// (`retention.bytes`) deletes sealed segments oldest first while the rest still meets the
/// limit. The larger of the two prefixes wins.
pub fn segments_to_delete(
    segments: &[SegmentSummary],
    retention_bytes: Option<u64>,
    retention_ms: Option<i64>,
    now_ms: i64,
) -> usize {
    let by_time = match retention_ms {
        Some(limit) => segments
            .iter()
            .take_while(|s| {
                !s.is_empty() && s.max_timestamp >= 0 && now_ms - s.max_timestamp > limit
            })
            .count(),
        None => 0,
    };
    let by_size = match retention_bytes {
        Some(limit) => {
            let total: u64 = segments.iter().map(|s| s.size_bytes).sum();
            let mut excess = total.saturating_sub(limit);
            let sealed = segments.len().saturating_sub(1);
            let mut n = 0;
            while n < sealed && excess >= segments[n].size_bytes && segments[n].size_bytes > 0 {
                excess -= segments[n].size_bytes;
                n += 1;
            }
            n
        }
        None => 0,
    };
    by_time.max(by_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(base: i64, size: u64, max_ts: i64) -> SegmentSummary {
        SegmentSummary {
            base_offset: base,
            next_offset: base + 10,
            size_bytes: size,
            max_timestamp: max_ts,
            roll_reference_ms: max_ts,
        }
    }

    #[test]
    fn time_retention_deletes_expired_prefix_only() {
        let segs = [
            seg(0, 100, 1_000),
            seg(10, 100, 5_000),
            seg(20, 100, 2_000),
            seg(30, 100, 9_000),
        ];
        // now=7000, limit=3000: segment 0 (age 6000) expired, segment 1 (age 2000) not; segment 2
        // is expired but behind a live one, so it stays (a prefix only, like Kafka).
        assert_eq!(segments_to_delete(&segs, None, Some(3_000), 7_000), 1);
        assert_eq!(
            segments_to_delete(&segs, None, Some(3_000), 100_000),
            4,
            "all, active included"
        );
        assert_eq!(segments_to_delete(&segs, None, None, 100_000), 0);
    }

    #[test]
    fn size_retention_keeps_active_and_limit() {
        let segs = [
            seg(0, 100, 1),
            seg(10, 100, 2),
            seg(20, 100, 3),
            seg(30, 50, 4),
        ];
        assert_eq!(segments_to_delete(&segs, Some(350), None, 10), 0);
        assert_eq!(segments_to_delete(&segs, Some(250), None, 10), 1);
        assert_eq!(segments_to_delete(&segs, Some(150), None, 10), 2);
        assert_eq!(
            segments_to_delete(&segs, Some(0), None, 10),
            3,
            "never the active segment"
        );
    }

    #[test]
    fn empty_segments_never_expire_by_time() {
        let segs = [seg(0, 0, -1)];
        assert_eq!(segments_to_delete(&segs, None, Some(0), i64::MAX), 0);
    }

    #[test]
    fn roll_on_size_age_and_offset_span() {
        let config = LogConfig {
            segment_bytes: 1000,
            segment_ms: 60_000,
            ..LogConfig::default()
        };
        let active = seg(0, 900, 1_000);
        assert!(!roll_due(&active, &config, 100, 5, 1_000));
        assert!(roll_due(&active, &config, 101, 5, 1_000));
        assert!(roll_due(&active, &config, 1, 5, 61_000));
        assert!(!roll_due(&active, &config, 1, 5, 60_999));
        assert!(roll_due(
            &active,
            &config,
            1,
            i64::from(i32::MAX) + 1,
            1_000
        ));
        assert!(
            !roll_due(&seg(0, 0, -1), &config, 5_000, 5, i64::MAX),
            "never roll empty"
        );
    }
}
