//! The `[archive]` settings: where the archive lives and how the archiver spends CPU, network
//! and requests. Plain data with a `validate()` run at start-up.

use serde::{Deserialize, Serialize};

use crate::error::{ArchiveError, Result};
use crate::writer::WriterOptions;

/// Smallest multipart part S3 accepts (except the last).
pub const MIN_PART_SIZE: u64 = 5 << 20;

/// Where the archive lives and how archiving behaves.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ArchiveSettings {
    /// `file:///path` or `s3://bucket/prefix` (also `memory://` for tests). Empty: a `file://`
    /// archive in `<data dir>/archive`.
    pub url: String,
    /// S3 endpoint such as `http://minio:9000`. Default: `AWS_ENDPOINT_URL_S3`, then
    /// `AWS_ENDPOINT_URL`, then AWS itself.
    pub endpoint: Option<String>,
    /// S3 region. Default: `AWS_REGION` / `AWS_DEFAULT_REGION`, the AWS profile, then
    /// `us-east-1` (what MinIO expects unless configured otherwise).
    pub region: Option<String>,
    /// Access key. Default: the AWS credential chain (environment, profile, web identity as on
    /// OpenShift/EKS, container and instance metadata).
    pub access_key_id: Option<String>,
    /// Secret key, with `access_key_id`.
    pub secret_access_key: Option<String>,
    /// Session token, with `access_key_id`.
    pub session_token: Option<String>,
    /// Path-style requests (`http://host/bucket/key`), which MinIO and most S3-compatible
    /// servers want. Default: on with a custom endpoint, off (virtual-hosted) for AWS.
    pub path_style: Option<bool>,
    /// Allow plain `http://` endpoints. Default: on when the endpoint is `http://`.
    pub allow_http: Option<bool>,
    /// Time limit of one object-store request (a part upload included).
    pub request_timeout_ms: u64,
    /// Time limit for connecting.
    pub connect_timeout_ms: u64,
    /// Retries of one request on throttling, 5xx and connection errors, with exponential
    /// backoff, before the archiver sees the error.
    pub max_retries: usize,
    /// No retry of a request starts later than this after its first attempt.
    pub retry_timeout_ms: u64,
    /// How often the archiver looks for sealed segments to upload (it is also woken when a
    /// segment rolls).
    pub check_interval_ms: u64,
    /// Segments uploaded at once, across partitions.
    pub max_concurrent_uploads: usize,
    /// Threads converting segments to Parquet (each uses up to one core).
    pub encoder_threads: usize,
    /// Upload bandwidth cap in bytes per second across all uploads (0: unlimited).
    pub upload_rate_limit_bytes_per_second: u64,
    /// Objects larger than this are uploaded in parts of this size (multipart); smaller ones
    /// with one create-only PUT. Each part is one request: larger parts mean fewer PUTs.
    pub part_size_bytes: u64,
    /// Target encoded size of a Parquet row group. A replay reads a whole row group with one
    /// ranged GET; analytics engines parallelise by row group.
    pub row_group_bytes: u64,
    /// zstd level of the Parquet column chunks (-7 to 22): higher is smaller and slower; the
    /// negative "fast" levels trade size for speed. Level 1 is the benchmarked default (on JSON
    /// events it compressed as well as level 3, 30% faster; see docs/performance.md).
    pub zstd_level: i32,
    /// An object the manifest does not reference is deleted once it is this old (it may be an
    /// upload whose commit is still in flight).
    pub orphan_grace_ms: u64,
    /// How often unreferenced objects are looked for (this lists the bucket; the read path
    /// never does).
    pub gc_interval_ms: u64,
    /// Longest wait before retrying a segment whose upload failed (the wait doubles from
    /// one second up to this).
    pub retry_backoff_max_ms: u64,
    /// Memory for archive reads (fetches below the local log start): half caches fetched
    /// Parquet row groups, half the record batches rebuilt from them (in chunks of about 4
    /// MiB of records).
    pub cache_memory_bytes: u64,
    /// Local disk for fetched row groups, behind the memory tier (0: no disk tier). Files are
    /// sparse: space is used as the cache fills.
    pub cache_disk_bytes: u64,
    /// Directory of the disk tier. Empty: `<data dir>/archive-cache`.
    pub cache_dir: String,
    /// Row groups fetched ahead of a sequential archive reader (across objects); the next few
    /// chunks of them are decoded ahead too.
    pub prefetch_row_groups: usize,
}

impl std::fmt::Debug for ArchiveSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArchiveSettings")
            .field("url", &self.url)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "<redacted>"),
            )
            .field("path_style", &self.path_style)
            .finish_non_exhaustive()
    }
}

impl Default for ArchiveSettings {
    fn default() -> Self {
        Self {
            url: String::new(),
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            path_style: None,
            allow_http: None,
            request_timeout_ms: 120_000,
            connect_timeout_ms: 5_000,
            max_retries: 10,
            retry_timeout_ms: 180_000,
            check_interval_ms: 5_000,
            max_concurrent_uploads: 2,
            encoder_threads: 1,
            upload_rate_limit_bytes_per_second: 0,
            part_size_bytes: 32 << 20,
            row_group_bytes: 8 << 20,
            zstd_level: 1,
            orphan_grace_ms: 3_600_000,
            gc_interval_ms: 600_000,
            retry_backoff_max_ms: 60_000,
            cache_memory_bytes: 256 << 20,
            cache_disk_bytes: 1 << 30,
            cache_dir: String::new(),
            prefetch_row_groups: 2,
        }
    }
}

fn invalid(name: &'static str, reason: impl Into<String>) -> ArchiveError {
    ArchiveError::InvalidConfig {
        name,
        reason: reason.into(),
    }
}

impl ArchiveSettings {
    /// Checks values that cannot work; errors name the setting.
    pub fn validate(&self) -> Result<()> {
        if !self.url.is_empty() {
            crate::store::ArchiveUrl::parse(&self.url)?;
        }
        if self.access_key_id.is_some() != self.secret_access_key.is_some() {
            return Err(invalid(
                "archive.access_key_id",
                "access_key_id and secret_access_key must be set together",
            ));
        }
        if self.part_size_bytes < MIN_PART_SIZE {
            return Err(invalid(
                "archive.part_size_bytes",
                format!(
                    "must be at least {MIN_PART_SIZE} (S3's smallest part), got {}",
                    self.part_size_bytes
                ),
            ));
        }
        if self.row_group_bytes == 0 {
            return Err(invalid("archive.row_group_bytes", "must be at least 1"));
        }
        if !(-7..=22).contains(&self.zstd_level) {
            return Err(invalid(
                "archive.zstd_level",
                format!("must be between -7 and 22, got {}", self.zstd_level),
            ));
        }
        for (name, v) in [
            (
                "archive.max_concurrent_uploads",
                self.max_concurrent_uploads,
            ),
            ("archive.encoder_threads", self.encoder_threads),
        ] {
            if v == 0 {
                return Err(invalid(name, "must be at least 1"));
            }
        }
        for (name, v) in [
            ("archive.request_timeout_ms", self.request_timeout_ms),
            ("archive.connect_timeout_ms", self.connect_timeout_ms),
            ("archive.check_interval_ms", self.check_interval_ms),
            ("archive.gc_interval_ms", self.gc_interval_ms),
            ("archive.retry_backoff_max_ms", self.retry_backoff_max_ms),
        ] {
            if v == 0 {
                return Err(invalid(name, "must be at least 1"));
            }
        }
        if self.cache_memory_bytes < 2 << 20 {
            return Err(invalid(
                "archive.cache_memory_bytes",
                format!("must be at least 2 MiB, got {}", self.cache_memory_bytes),
            ));
        }
        let block = self.cache_block_bytes() as u64;
        if self.cache_disk_bytes != 0 && self.cache_disk_bytes < 4 * block {
            return Err(invalid(
                "archive.cache_disk_bytes",
                format!(
                    "must be 0 (no disk tier) or at least {} (four blocks of {block}, twice \
                     archive.row_group_bytes or 16 MiB), got {}",
                    4 * block,
                    self.cache_disk_bytes
                ),
            ));
        }
        Ok(())
    }

    /// Block size of the disk cache: the largest entry it holds, so at least a row group.
    fn cache_block_bytes(&self) -> usize {
        ((self.row_group_bytes as usize).saturating_mul(2)).max(16 << 20)
    }

    /// Sizes of the read cache.
    pub fn cache_sizes(&self) -> crate::cache::CacheSizes {
        crate::cache::CacheSizes {
            memory_bytes: (self.cache_memory_bytes / 2) as usize,
            disk_bytes: self.cache_disk_bytes as usize,
            disk_block_bytes: self.cache_block_bytes(),
        }
    }

    /// The read path's options.
    pub fn reader_options(&self) -> crate::reader::ReaderOptions {
        crate::reader::ReaderOptions {
            decoded_cache_bytes: (self.cache_memory_bytes / 2) as usize,
            prefetch_row_groups: self.prefetch_row_groups,
            ..crate::reader::ReaderOptions::default()
        }
    }

    /// Directory of the disk cache.
    pub fn cache_dir(&self, data_dir: &std::path::Path) -> std::path::PathBuf {
        if self.cache_dir.is_empty() {
            data_dir.join("archive-cache")
        } else {
            std::path::PathBuf::from(&self.cache_dir)
        }
    }

    /// The Parquet writer options these settings ask for.
    pub fn writer_options(&self, max_decompressed_batch_bytes: usize) -> WriterOptions {
        WriterOptions {
            row_group_bytes: self.row_group_bytes as usize,
            max_decompressed_batch_bytes,
            zstd_level: self.zstd_level,
            ..WriterOptions::default()
        }
    }
}
