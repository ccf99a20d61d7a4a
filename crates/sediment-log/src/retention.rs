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

/// The limits retention enforces on one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionLimits {
    /// `retention.bytes`: local and archived data together (`None`: unlimited).
    pub bytes: Option<u64>,
    /// `retention.ms`: local and archived data together (`None`: unlimited).
    pub ms: Option<i64>,
    /// `local.retention.bytes`, applied only when the partition is tiered.
    pub local_bytes: Option<u64>,
    /// `local.retention.ms`, applied only when the partition is tiered.
    pub local_ms: Option<i64>,
    /// Whether sealed segments are archived (`remote.storage.enable`).
    pub tiered: bool,
}

/// What one retention pass deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RetentionPlan {
    /// The new start of the whole log when `retention.*` moved it: every segment, local or
    /// archived, that ends at or before this offset is out of retention.
    pub log_start_offset: Option<i64>,
    /// Local segments to delete, oldest first (by the total limits, then the local ones).
    pub local_segments: usize,
    /// The active segment has expired too and must be rolled before the deletion.
    pub roll_active: bool,
    /// Archived segments (oldest first) that are out of retention.
    pub archived_segments: usize,
}

/// Decides one retention pass over `local` segments (oldest first, the active one last) and
/// `archived` ones (oldest first; an archived segment has the same offsets as the local
/// segment it was made from, and may still be present locally).
///
/// `retention.*` apply to the whole log: the archived segments no longer held locally come
/// first, then the local ones; what falls out is deleted from both tiers. When the partition is
/// tiered, `local.retention.*` then delete further local segments, but never the active one and
/// never one the archive does not hold yet, so nothing unarchived is lost to the local limits.
pub fn plan_retention(
    local: &[SegmentSummary],
    archived: &[SegmentSummary],
    limits: &RetentionLimits,
    now_ms: i64,
) -> RetentionPlan {
    let Some(first_local) = local.first() else {
        return RetentionPlan::default();
    };
    let archive_only = archived
        .iter()
        .take_while(|a| a.next_offset <= first_local.base_offset)
        .count();
    let combined: Vec<SegmentSummary> = archived[..archive_only]
        .iter()
        .chain(local)
        .copied()
        .collect();
    let n = segments_to_delete(&combined, limits.bytes, limits.ms, now_ms);
    let mut plan = RetentionPlan::default();
    let start = match n {
        0 => None,
        n if n == combined.len() => {
            plan.roll_active = true;
            combined.last().map(|s| s.next_offset)
        }
        n => Some(combined[n].base_offset),
    };
    if let Some(start) = start {
        plan.log_start_offset = Some(start);
        plan.archived_segments = archived
            .iter()
            .take_while(|a| a.next_offset <= start)
            .count();
        // Never the active segment unless it is rolled first: an empty active segment starts
        // and ends at the new start, and must stay.
        let deletable = if plan.roll_active {
            local
        } else {
            &local[..local.len() - 1]
        };
        plan.local_segments = deletable
            .iter()
            .take_while(|s| s.next_offset <= start)
            .count();
    }
    if limits.tiered && !plan.roll_active {
        let remaining = &local[plan.local_segments..];
        let archived_end = archived.last().map_or(i64::MIN, |a| a.next_offset);
        let sealed = remaining.len().saturating_sub(1);
        let by_local =
            segments_to_delete(remaining, limits.local_bytes, limits.local_ms, now_ms).min(sealed);
        plan.local_segments += remaining[..by_local]
            .iter()
            .take_while(|s| s.next_offset <= archived_end)
            .count();
    }
    plan
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

    fn at(base: i64, next: i64, size: u64, max_ts: i64) -> SegmentSummary {
        SegmentSummary {
            base_offset: base,
            next_offset: next,
            size_bytes: size,
            max_timestamp: max_ts,
            roll_reference_ms: 0,
        }
    }

    /// Local segments [0,10) [10,20) [20,30) [30,40 active), 100 bytes each, newest records at
    /// t=1000, 2000, 3000, 4000.
    fn local4() -> Vec<SegmentSummary> {
        (0..4)
            .map(|i| at(i * 10, i * 10 + 10, 100, (i + 1) * 1000))
            .collect()
    }

    #[test]
    fn local_limits_delete_only_archived_sealed_segments() {
        let local = local4();
        let limits = RetentionLimits {
            local_bytes: Some(0),
            tiered: true,
            ..RetentionLimits::default()
        };
        // Nothing archived: the local limit deletes nothing.
        assert_eq!(
            plan_retention(&local, &[], &limits, 10_000).local_segments,
            0
        );
        // Two segments archived: exactly those two go.
        let archived = [local[0], local[1]];
        let plan = plan_retention(&local, &archived, &limits, 10_000);
        assert_eq!(plan.local_segments, 2);
        assert_eq!((plan.archived_segments, plan.log_start_offset), (0, None));
        // Even with everything archived, the active segment stays.
        let all = [local[0], local[1], local[2], local[3]];
        assert_eq!(
            plan_retention(&local, &all, &limits, 10_000).local_segments,
            3
        );
        // Not tiered: the local limits do not apply.
        let flat = RetentionLimits {
            tiered: false,
            ..limits
        };
        assert_eq!(
            plan_retention(&local, &archived, &flat, 10_000).local_segments,
            0
        );
    }

    #[test]
    fn local_time_limit_is_a_prefix_of_archived_segments() {
        let local = local4();
        let archived = [local[0], local[1], local[2]];
        let limits = RetentionLimits {
            local_ms: Some(1_500),
            tiered: true,
            ..RetentionLimits::default()
        };
        // now=3600: segments 0 (age 2600) and 1 (age 1600) are past 1500 ms locally.
        let plan = plan_retention(&local, &archived, &limits, 3_600);
        assert_eq!(plan.local_segments, 2);
        assert_eq!(plan.archived_segments, 0, "the archive keeps them");
    }

    #[test]
    fn total_limits_span_both_tiers() {
        // Archive holds [0,10) .. [30,40); local holds [20,30) [30,40) [40,50 active).
        let archived: Vec<_> = (0..4)
            .map(|i| at(i * 10, i * 10 + 10, 100, (i + 1) * 1000))
            .collect();
        let local = vec![archived[2], archived[3], at(40, 50, 100, 5000)];
        // retention.ms=2500 at now=5000: segments with newest record before 2500 are out:
        // [0,10) and [10,20), both archive-only.
        let limits = RetentionLimits {
            ms: Some(2_500),
            tiered: true,
            ..RetentionLimits::default()
        };
        let plan = plan_retention(&local, &archived, &limits, 5_000);
        assert_eq!(plan.log_start_offset, Some(20));
        assert_eq!((plan.archived_segments, plan.local_segments), (2, 0));
        // retention.bytes counts archive-only bytes plus local bytes: 500 in all. With a limit
        // of 150 the three oldest go (as in Kafka, while what remains still meets the limit):
        // two archive-only segments and [20,30) from both tiers.
        let limits = RetentionLimits {
            bytes: Some(150),
            tiered: true,
            ..RetentionLimits::default()
        };
        let plan = plan_retention(&local, &archived, &limits, 5_000);
        assert_eq!(plan.log_start_offset, Some(30));
        assert_eq!((plan.archived_segments, plan.local_segments), (3, 1));
        // Everything expired: roll the active segment and delete it all, archive included.
        let limits = RetentionLimits {
            ms: Some(10),
            tiered: true,
            ..RetentionLimits::default()
        };
        let plan = plan_retention(&local, &archived, &limits, 100_000);
        assert!(plan.roll_active);
        assert_eq!(plan.log_start_offset, Some(50));
        assert_eq!((plan.archived_segments, plan.local_segments), (4, 3));
    }

    #[test]
    fn an_empty_active_segment_is_never_deleted() {
        // Everything sealed has expired; the active segment is empty (it was just rolled).
        let local = [at(0, 10, 100, 1000), at(10, 10, 0, -1)];
        let archived = [local[0]];
        for tiered in [false, true] {
            let limits = RetentionLimits {
                ms: Some(10),
                tiered,
                ..RetentionLimits::default()
            };
            let plan = plan_retention(&local, &archived, &limits, 100_000);
            assert!(!plan.roll_active);
            assert_eq!(plan.log_start_offset, Some(10));
            assert_eq!((plan.local_segments, plan.archived_segments), (1, 1));
        }
    }

    #[test]
    fn without_an_archive_the_plan_is_plain_retention() {
        let local = local4();
        for (bytes, ms, now) in [
            (None, Some(1_500), 3_000),
            (Some(150), None, 0),
            (Some(0), Some(0), 10_000),
        ] {
            let limits = RetentionLimits {
                bytes,
                ms,
                ..RetentionLimits::default()
            };
            let n = segments_to_delete(&local, bytes, ms, now);
            let plan = plan_retention(&local, &[], &limits, now);
            assert_eq!(plan.local_segments, n);
        }
    }
}
