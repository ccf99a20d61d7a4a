//! File and directory names, in one place. They follow Kafka's so operators find their way:
//! `<data dir>/<topic>-<partition>/<20-digit base offset>.{log,index,timeindex}`.

use std::path::{Path, PathBuf};

/// Suffix of a partition directory renamed for asynchronous deletion.
pub const DELETE_SUFFIX: &str = "-delete";

pub(crate) const LOG_EXT: &str = "log";
pub(crate) const INDEX_EXT: &str = "index";
pub(crate) const TIME_INDEX_EXT: &str = "timeindex";
pub(crate) const SNAPSHOT_EXT: &str = "snapshot";
/// Written next to a sealed index before the rename that publishes it.
pub(crate) const TMP_SUFFIX: &str = "tmp";

/// `<topic>-<partition>`.
pub fn partition_dir_name(topic: &str, partition: i32) -> String {
    format!("{topic}-{partition}")
}

/// Inverse of [`partition_dir_name`]; topic names may themselves contain `-`.
pub fn parse_partition_dir_name(name: &str) -> Option<(String, i32)> {
    let (topic, partition) = name.rsplit_once('-')?;
    let partition: i32 = partition.parse().ok()?;
    if topic.is_empty()
        || partition < 0
        || partition.to_string().len() != name.len() - topic.len() - 1
    {
        return None;
    }
    Some((topic.to_string(), partition))
}

pub(crate) fn segment_file(dir: &Path, base_offset: i64, ext: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{ext}"))
}

/// Base offset of a `<20 digits>.log` file name.
pub(crate) fn parse_log_file_name(name: &str) -> Option<i64> {
    parse_offset_file_name(name, LOG_EXT)
}

/// Offset of a `<20 digits>.<ext>` file name.
pub(crate) fn parse_offset_file_name(name: &str, ext: &str) -> Option<i64> {
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partition_names_round_trip() {
        assert_eq!(partition_dir_name("orders-eu", 3), "orders-eu-3");
        assert_eq!(
            parse_partition_dir_name("orders-eu-3"),
            Some(("orders-eu".into(), 3))
        );
        assert_eq!(parse_partition_dir_name("orders"), None);
        assert_eq!(parse_partition_dir_name("-3"), None);
        assert_eq!(parse_partition_dir_name("t-03"), None);
        assert_eq!(parse_partition_dir_name("t-+3"), None);
    }

    #[test]
    fn segment_names_are_zero_padded() {
        let p = segment_file(Path::new("/d"), 42, LOG_EXT);
        assert_eq!(p, Path::new("/d/00000000000000000042.log"));
        assert_eq!(parse_log_file_name("00000000000000000042.log"), Some(42));
        assert_eq!(parse_log_file_name("42.log"), None);
        assert_eq!(parse_log_file_name("00000000000000000042.index"), None);
    }
}
