//! Resetting a consumer group's committed offsets, as `kafka-consumer-groups --reset-offsets`
//! does: to the earliest or latest offset, to an offset, to the first record at or after a
//! time, or shifted by N. Earliest and times reach into the archive, so a group can be rewound
//! to any point of the retained history. Like Kafka, only a group without active members can
//! be reset (its members would commit over the reset), and a plan is shown without being
//! applied unless asked (`dry_run`).

use serde::{Deserialize, Serialize};

use crate::broker::Broker;
use crate::errors::BrokerError;
use crate::group::offsets::CommittedOffset;
use crate::lookup;

/// Where to move the offsets.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetTo {
    /// The start of the whole log (archive included).
    Earliest,
    /// The log end offset.
    Latest,
    /// This offset, clamped into the log's range.
    Offset(i64),
    /// The first record whose timestamp is at or after this time (RFC 3339, or
    /// `YYYY-MM-DDTHH:MM:SS[.sss]` meaning UTC, or milliseconds since the epoch); the log end
    /// when every record is older.
    Datetime(String),
    /// The committed offset moved by this many (negative: back), clamped into the log's range.
    ShiftBy(i64),
}

/// A reset request (the admin API's body).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ResetRequest {
    /// Topic.
    pub topic: String,
    /// Partitions (all when absent).
    #[serde(default)]
    pub partitions: Option<Vec<i32>>,
    /// Target.
    pub to: ResetTo,
    /// Only compute the plan.
    #[serde(default)]
    pub dry_run: bool,
}

/// One partition's reset.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionReset {
    /// Partition.
    pub partition: i32,
    /// Committed offset before (none: nothing was committed).
    pub previous: Option<i64>,
    /// The new committed offset.
    pub offset: i64,
}

/// What a reset did (or would do).
#[derive(Debug, Clone, Serialize)]
pub struct ResetPlan {
    /// Group.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Per partition.
    pub partitions: Vec<PartitionReset>,
    /// Whether the offsets were committed (false for a dry run).
    pub applied: bool,
}

/// Parses a `Datetime` target into milliseconds since the epoch.
pub fn parse_datetime(s: &str) -> Result<i64, BrokerError> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    for format in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, format) {
            return Ok(t.and_utc().timestamp_millis());
        }
    }
    Err(BrokerError::InvalidRequest(format!(
        "cannot read the time '{s}': use RFC 3339 (2026-11-27T10:00:00Z), \
         YYYY-MM-DDTHH:MM:SS[.sss] (UTC) or milliseconds since the epoch"
    )))
}

impl Broker {
    /// Plans and, unless `req.dry_run`, commits a reset of `group`'s offsets on one topic.
    pub async fn reset_group_offsets(
        &self,
        group: &str,
        req: &ResetRequest,
    ) -> Result<ResetPlan, BrokerError> {
        let topic = self
            .topic(&req.topic)
            .ok_or_else(|| BrokerError::UnknownTopicOrPartition(req.topic.clone()))?;
        let indexes: Vec<i32> = match &req.partitions {
            Some(p) => p.clone(),
            None => (0..topic.partition_count()).collect(),
        };
        let time = match &req.to {
            ResetTo::Datetime(s) => Some(parse_datetime(s)?),
            _ => None,
        };
        let groups = self.groups();
        let mut partitions = Vec::with_capacity(indexes.len());
        for index in indexes {
            let p = topic.partition(index).ok_or_else(|| {
                BrokerError::UnknownTopicOrPartition(format!("{}-{index}", req.topic))
            })?;
            let start = lookup::log_start_offset(self, &p)?;
            let (_, end) = p.offsets()?;
            let previous = groups
                .committed(group, &(req.topic.clone(), index))
                .map(|c| c.offset);
            let offset = match &req.to {
                ResetTo::Earliest => start,
                ResetTo::Latest => end,
                ResetTo::Offset(o) => (*o).clamp(start, end),
                ResetTo::ShiftBy(n) => previous
                    .unwrap_or(start)
                    .saturating_add(*n)
                    .clamp(start, end),
                ResetTo::Datetime(_) => {
                    let t = time.expect("parsed above");
                    match lookup::offset_for_timestamp(self, &p, t).await? {
                        (-1, _) => end,
                        (o, _) => o,
                    }
                }
            };
            partitions.push(PartitionReset {
                partition: index,
                previous,
                offset,
            });
        }
        if !req.dry_run {
            // An admin commit: refused while the group has members, as in Kafka.
            groups.check_commit(group, -1, "", None).map_err(|_| {
                BrokerError::InvalidRequest(format!(
                    "group {group} has active members: stop its consumers before resetting offsets"
                ))
            })?;
            let now = groups.now_ms();
            let offsets: Vec<_> = partitions
                .iter()
                .map(|r| {
                    (
                        (req.topic.clone(), r.partition),
                        CommittedOffset {
                            offset: r.offset,
                            leader_epoch: -1,
                            metadata: String::new(),
                            commit_timestamp: now,
                        },
                    )
                })
                .collect();
            groups.store_offsets(group, &offsets)?;
        }
        Ok(ResetPlan {
            group: group.to_string(),
            topic: req.topic.clone(),
            partitions,
            applied: !req.dry_run,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_in_the_usual_forms() {
        assert_eq!(parse_datetime("1764237600000").unwrap(), 1_764_237_600_000);
        assert_eq!(
            parse_datetime("2025-11-27T10:00:00Z").unwrap(),
            1_764_237_600_000
        );
        assert_eq!(
            parse_datetime("2025-11-27T11:00:00+01:00").unwrap(),
            1_764_237_600_000
        );
        assert_eq!(
            parse_datetime("2025-11-27T10:00:00.250").unwrap(),
            1_764_237_600_250
        );
        let err = parse_datetime("yesterday").unwrap_err().to_string();
        assert!(err.contains("RFC 3339"), "{err}");
    }
}
