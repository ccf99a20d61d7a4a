//! Sediment's cold tier: sealed segments of the local log become Parquet files in an
//! S3-compatible bucket (or a local directory), one open copy that Kafka consumers replay and
//! that Spark, DuckDB or Trino query in place.
//!
//! - `records`: lossless reading of records inside Kafka v2 batches (duplicate headers kept);
//! - `schema`, `writer`: the table schema and segment -> Arrow -> Parquet;
//! - `paths`: the object key layout (Hive-style `topic=`/`partition=` directories);
//! - `store`, `instrumented`: opening the store an archive URL names, request counting;
//! - `archive`: staging, create-only upload (a retry recognises its own object), deletion,
//!   orphan collection, verification;
//! - `manifest`, `catalog`: what is recorded about each archived segment, and the trait the
//!   broker implements to keep it (the archive never lists the bucket to find data).
//!
//! The crate knows nothing of Kafka requests or of the metadata service behind the catalog.

mod archive;
mod cache;
mod catalog;
mod error;
mod instrumented;
mod listing;
mod manifest;
mod paths;
mod reader;
mod records;
mod schema;
mod settings;
mod store;
mod writer;

pub use archive::{
    Archive, ClusterMarker, LivePartition, Orphan, RateLimiter, Staged, UploadOutcome,
    VerifyProblem, VerifyReport, is_collectable, read_entry, staging_dir,
};
pub use cache::{CacheCounters, CacheOutcome, CacheSizes, ChunkCache, FoyerCache, Loader, NoCache};
pub use catalog::{Catalog, CatalogState, CommitOutcome, MemoryCatalog};
pub use error::{ArchiveError, Result};
pub use instrumented::{InstrumentedStore, Op, RequestCounters};
pub use listing::{TopicListing, list_topic};
pub use manifest::{ArchivedSegment, RowGroupEntry, entry_from_footer};
pub use paths::{CLUSTER_MARKER, Layout, SegmentKey};
pub use reader::{ArchiveRead, ArchiveReader, ReadCounters, ReaderOptions};
pub use records::{
    Codec, DECOMPRESSED_TOO_LARGE, DecodedBatch, Headers, Record, decompress_capped,
    decompress_capped_into,
};
pub use schema::{SCHEMA_VERSION, arrow_schema, col, meta};
pub use settings::{ArchiveSettings, MIN_PART_SIZE};
pub use store::{
    ArchiveStore, ArchiveUrl, AwsChainCredentials, default_url, open_store, resolve_endpoint,
};
pub use writer::{SegmentSource, WriterOptions, write_segment, writer_properties};

#[cfg(test)]
mod tests;
