//! Errors of the archive. Messages are lowercase with the values at the end; callers branch on
//! [`ArchiveError::is_retryable`], not on the variant.

/// Result alias for this crate.
pub type Result<T, E = ArchiveError> = std::result::Result<T, E>;

/// What went wrong while archiving or reading the archive.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The object store failed (network, throttling, server error, credentials...).
    #[error("object store error: {0}")]
    Store(#[from] object_store::Error),
    /// A local file (a segment or a staging file) could not be read or written.
    #[error("i/o error on {path}: {source}")]
    Io {
        /// File involved.
        path: std::path::PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// A record batch in a segment does not decode. Archiving of that segment stops; the local
    /// copy stays.
    #[error("corrupt record batch: {0}")]
    CorruptBatch(String),
    /// Parquet or Arrow refused the data.
    #[error("parquet error: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    /// Arrow refused the data.
    #[error("arrow error: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    /// An archive object that is not what its key or the manifest says it is.
    #[error("archive object {key} does not match: {reason}")]
    Mismatch {
        /// Object key.
        key: String,
        /// What differs.
        reason: String,
    },
    /// The catalog refused a change (overlapping ranges, unknown entries, a failed write).
    #[error("catalog error: {0}")]
    Catalog(String),
    /// The read cache could not be set up (a read never fails because of the cache: a cache
    /// failure is a miss).
    #[error("archive cache error: {0}")]
    Cache(String),
    /// A setting that cannot work; names the setting.
    #[error("invalid setting {name}: {reason}")]
    InvalidConfig {
        /// Setting name.
        name: &'static str,
        /// Why.
        reason: String,
    },
}

impl ArchiveError {
    /// Whether trying the same operation again later may succeed: store and I/O failures are
    /// (an outage ends, a disk is freed), corrupt data and mismatches are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Store(e) => !matches!(
                e,
                object_store::Error::NotSupported { .. }
                    | object_store::Error::NotImplemented { .. }
                    | object_store::Error::InvalidPath { .. }
            ),
            Self::Io { .. } | Self::Catalog(_) | Self::Cache(_) => true,
            Self::CorruptBatch(_)
            | Self::Parquet(_)
            | Self::Arrow(_)
            | Self::Mismatch { .. }
            | Self::InvalidConfig { .. } => false,
        }
    }

    pub(crate) fn io(path: impl Into<std::path::PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}
