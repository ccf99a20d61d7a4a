//! The cache in front of archive reads: our own small trait ([`ChunkCache`]) and its `foyer`
//! implementation (a hybrid cache: memory, then local disk).
//!
//! Entries are immutable byte ranges of archive objects (a footer, a row group), keyed by
//! object key and range. Archive objects never change once written, so an entry never goes
//! stale. Concurrent misses for the same key share one fetch. A cache failure (the disk tier
//! cannot be read, say) never fails a read: it degrades to a miss.

use std::path::Path as FsPath;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use foyer::{BlockEngineConfig, DeviceBuilder, FsDeviceBuilder, HybridCache, HybridCacheBuilder};
use futures::future::BoxFuture;

use crate::error::{ArchiveError, Result};

/// Makes the future that reads an entry from object storage; called at most twice (once more
/// when the cache itself failed).
pub type Loader<'a> = &'a (dyn Fn() -> BoxFuture<'static, Result<Bytes>> + Send + Sync);

/// Where an entry came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Served by the cache (or by another reader's fetch of the same entry).
    Hit,
    /// Read from object storage by this call.
    Miss,
}

/// Counters of one cache.
#[derive(Debug, Default)]
pub struct CacheCounters {
    /// Lookups served by the cache.
    pub hits: AtomicU64,
    /// Lookups that read object storage.
    pub misses: AtomicU64,
    /// Bytes served by the cache.
    pub hit_bytes: AtomicU64,
    /// Bytes read from object storage.
    pub miss_bytes: AtomicU64,
    /// Cache failures that were turned into misses.
    pub errors: AtomicU64,
}

/// A cache of immutable archive byte ranges.
#[async_trait]
pub trait ChunkCache: Send + Sync + std::fmt::Debug {
    /// The entry `key`, from the cache or else from `load` (whose result is then cached).
    /// Errors are `load`'s; the cache's own failures are misses.
    async fn get_or_load(&self, key: &str, load: Loader<'_>) -> Result<(Bytes, CacheOutcome)>;
    /// Counters.
    fn counters(&self) -> &CacheCounters;
}

fn count(counters: &CacheCounters, outcome: CacheOutcome, bytes: usize) {
    let (n, b) = match outcome {
        CacheOutcome::Hit => (&counters.hits, &counters.hit_bytes),
        CacheOutcome::Miss => (&counters.misses, &counters.miss_bytes),
    };
    n.fetch_add(1, Ordering::Relaxed);
    b.fetch_add(bytes as u64, Ordering::Relaxed);
}

/// No caching: every lookup reads object storage. For tools that read an archive once.
#[derive(Debug, Default)]
pub struct NoCache {
    counters: CacheCounters,
}

#[async_trait]
impl ChunkCache for NoCache {
    async fn get_or_load(&self, _key: &str, load: Loader<'_>) -> Result<(Bytes, CacheOutcome)> {
        let bytes = load().await?;
        count(&self.counters, CacheOutcome::Miss, bytes.len());
        Ok((bytes, CacheOutcome::Miss))
    }

    fn counters(&self) -> &CacheCounters {
        &self.counters
    }
}

/// Sizes of the hybrid cache.
#[derive(Debug, Clone)]
pub struct CacheSizes {
    /// Memory tier, bytes.
    pub memory_bytes: usize,
    /// Disk tier, bytes (0: memory only).
    pub disk_bytes: usize,
    /// Largest entry the disk tier can hold (its block size).
    pub disk_block_bytes: usize,
}

/// The `foyer` hybrid cache.
pub struct FoyerCache {
    cache: HybridCache<String, Bytes>,
    counters: CacheCounters,
}

impl std::fmt::Debug for FoyerCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FoyerCache")
            .field("hybrid", &self.cache.is_hybrid())
            .finish_non_exhaustive()
    }
}

fn cache_error(e: impl std::fmt::Display) -> ArchiveError {
    ArchiveError::Cache(e.to_string())
}

impl FoyerCache {
    /// A cache with a memory tier and, when `sizes.disk_bytes > 0`, a disk tier in `dir`
    /// (created if missing; what a previous run left there is reused).
    pub async fn open(dir: &FsPath, sizes: &CacheSizes) -> Result<Self> {
        let builder = HybridCacheBuilder::new()
            .with_name("sediment-archive")
            .memory(sizes.memory_bytes.max(1))
            .with_weighter(|key: &String, value: &Bytes| key.len() + value.len())
            .storage();
        let cache = if sizes.disk_bytes > 0 {
            std::fs::create_dir_all(dir).map_err(|e| ArchiveError::io(dir, e))?;
            let device = FsDeviceBuilder::new(dir)
                .with_capacity(sizes.disk_bytes)
                .build()
                .map_err(cache_error)?;
            builder
                .with_engine_config(
                    BlockEngineConfig::new(device).with_block_size(sizes.disk_block_bytes),
                )
                .build()
                .await
        } else {
            builder.build().await
        }
        .map_err(cache_error)?;
        Ok(Self {
            cache,
            counters: CacheCounters::default(),
        })
    }

    /// Flushes and closes the disk tier.
    pub async fn close(&self) -> Result<()> {
        self.cache.close().await.map_err(cache_error)
    }
}

#[async_trait]
impl ChunkCache for FoyerCache {
    async fn get_or_load(&self, key: &str, load: Loader<'_>) -> Result<(Bytes, CacheOutcome)> {
        let loaded = Arc::new(AtomicBool::new(false));
        let failed: Arc<parking_lot::Mutex<Option<ArchiveError>>> = Arc::default();
        let fut = {
            let (loaded, failed) = (Arc::clone(&loaded), Arc::clone(&failed));
            let load = load();
            async move {
                loaded.store(true, Ordering::Relaxed);
                match load.await {
                    Ok(bytes) => Ok(bytes),
                    Err(e) => {
                        let message = e.to_string();
                        *failed.lock() = Some(e);
                        Err(std::io::Error::other(message))
                    }
                }
            }
        };
        let key_owned = key.to_string();
        match self.cache.get_or_fetch(&key_owned, move || fut).await {
            Ok(entry) => {
                let bytes = entry.value().clone();
                let outcome = if loaded.load(Ordering::Relaxed) {
                    CacheOutcome::Miss
                } else {
                    CacheOutcome::Hit
                };
                count(&self.counters, outcome, bytes.len());
                Ok((bytes, outcome))
            }
            Err(e) => {
                // Our own load failed: that is the answer.
                if let Some(err) = failed.lock().take() {
                    return Err(err);
                }
                // Another reader's load failed, or the cache did: read it ourselves.
                if !loaded.load(Ordering::Relaxed) {
                    tracing::debug!(key, error = %e, "archive cache lookup failed; reading the object");
                    self.counters.errors.fetch_add(1, Ordering::Relaxed);
                }
                let bytes = load().await?;
                count(&self.counters, CacheOutcome::Miss, bytes.len());
                Ok((bytes, CacheOutcome::Miss))
            }
        }
    }

    fn counters(&self) -> &CacheCounters {
        &self.counters
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    fn sizes(disk: usize) -> CacheSizes {
        CacheSizes {
            memory_bytes: 1 << 20,
            disk_bytes: disk,
            disk_block_bytes: 1 << 20,
        }
    }

    #[tokio::test]
    async fn concurrent_misses_share_one_load_and_later_lookups_hit() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(FoyerCache::open(dir.path(), &sizes(8 << 20)).await.unwrap());
        let loads = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (cache, loads) = (Arc::clone(&cache), Arc::clone(&loads));
            tasks.push(tokio::spawn(async move {
                let loader = move || -> BoxFuture<'static, Result<Bytes>> {
                    let loads = Arc::clone(&loads);
                    Box::pin(async move {
                        loads.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Ok(Bytes::from_static(b"row group"))
                    })
                };
                cache.get_or_load("k#0", &loader).await.unwrap()
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap().0, Bytes::from_static(b"row group"));
        }
        assert_eq!(
            loads.load(Ordering::SeqCst),
            1,
            "one load for 8 concurrent misses"
        );
        let c = cache.counters();
        assert_eq!(c.misses.load(Ordering::Relaxed), 1);
        assert_eq!(c.hits.load(Ordering::Relaxed), 7);
        let never = || -> BoxFuture<'static, Result<Bytes>> {
            Box::pin(async { panic!("a cached entry must not be loaded again") })
        };
        let (bytes, outcome) = cache.get_or_load("k#0", &never).await.unwrap();
        assert_eq!(
            (bytes.as_ref(), outcome),
            (&b"row group"[..], CacheOutcome::Hit)
        );
    }

    #[tokio::test]
    async fn a_failed_load_is_an_error_and_is_not_cached() {
        let cache = FoyerCache::open(std::path::Path::new("/nonexistent"), &sizes(0))
            .await
            .unwrap();
        let failing = || -> BoxFuture<'static, Result<Bytes>> {
            Box::pin(async { Err(ArchiveError::Cache("bucket unreachable".into())) })
        };
        let err = cache.get_or_load("k", &failing).await.unwrap_err();
        assert!(err.to_string().contains("bucket unreachable"), "{err}");
        let ok = || -> BoxFuture<'static, Result<Bytes>> {
            Box::pin(async { Ok(Bytes::from_static(b"x")) })
        };
        let (bytes, outcome) = cache.get_or_load("k", &ok).await.unwrap();
        assert_eq!((bytes.as_ref(), outcome), (&b"x"[..], CacheOutcome::Miss));
    }
}
