//! Opening the object store an archive URL names, composed from `object_store` backends and
//! our wrappers: S3 (MinIO, AWS, SeaweedFS, Ceph RGW) with the AWS credential chain, the local
//! filesystem (the embedded default), or memory (tests). Every store is wrapped in
//! [`crate::instrumented::InstrumentedStore`], which counts requests by kind.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_config::meta::region::RegionProviderChain;
use aws_credential_types::provider::ProvideCredentials;
use object_store::aws::{AmazonS3Builder, AwsCredential};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{BackoffConfig, ClientOptions, CredentialProvider, ObjectStore, RetryConfig};

use crate::error::{ArchiveError, Result};
use crate::instrumented::{InstrumentedStore, RequestCounters};
use crate::paths::Layout;
use crate::settings::ArchiveSettings;

/// Where an archive lives, parsed from `archive.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArchiveUrl {
    /// `file:///abs/path`.
    Local(PathBuf),
    /// `s3://bucket/prefix`.
    S3 {
        /// Bucket name.
        bucket: String,
        /// Key prefix (may be empty).
        prefix: String,
    },
    /// `memory://` (tests only: lost on exit).
    Memory,
}

fn bad_url(url: &str, why: &str) -> ArchiveError {
    ArchiveError::InvalidConfig {
        name: "archive.url",
        reason: format!("{why} (got '{url}'; expected file:///path or s3://bucket/prefix)"),
    }
}

impl ArchiveUrl {
    /// Parses `file:///path`, `s3://bucket[/prefix]` or `memory://`.
    pub fn parse(url: &str) -> Result<Self> {
        let parsed = url::Url::parse(url).map_err(|e| bad_url(url, &e.to_string()))?;
        match parsed.scheme() {
            "file" => {
                let path = parsed
                    .to_file_path()
                    .map_err(|()| bad_url(url, "not an absolute local path"))?;
                Ok(Self::Local(path))
            }
            "s3" | "s3a" => {
                let bucket = parsed
                    .host_str()
                    .filter(|b| !b.is_empty())
                    .ok_or_else(|| bad_url(url, "no bucket"))?
                    .to_string();
                if bucket.len() < 3 {
                    return Err(bad_url(url, "bucket names have at least 3 characters"));
                }
                let prefix = parsed.path().trim_matches('/').to_string();
                Path::parse(&prefix).map_err(|e| bad_url(url, &e.to_string()))?;
                Ok(Self::S3 { bucket, prefix })
            }
            "memory" => Ok(Self::Memory),
            other => Err(bad_url(url, &format!("unsupported scheme '{other}'"))),
        }
    }
}

/// An opened archive store: the store, the key layout under its prefix, and request counts.
#[derive(Debug, Clone)]
pub struct ArchiveStore {
    /// The store (instrumented).
    pub store: Arc<dyn ObjectStore>,
    /// Keys under the archive's prefix.
    pub layout: Layout,
    /// The URL it was opened from, for logs and the admin API (no secrets in it).
    pub url: String,
    /// Requests made, by kind.
    pub counters: Arc<RequestCounters>,
}

impl ArchiveStore {
    /// Wraps an existing store (tests, benchmarks).
    pub fn from_store(store: Arc<dyn ObjectStore>, prefix: Path, url: &str) -> Self {
        let counters = Arc::new(RequestCounters::default());
        Self {
            store: Arc::new(InstrumentedStore::new(store, Arc::clone(&counters))),
            layout: Layout::new(prefix),
            url: url.to_string(),
            counters,
        }
    }
}

/// Reads an environment variable; injected so resolution is testable.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The S3 endpoint to use: the setting, then `AWS_ENDPOINT_URL_S3`, then `AWS_ENDPOINT_URL`.
pub fn resolve_endpoint(settings: &ArchiveSettings, env: EnvLookup<'_>) -> Option<String> {
    settings
        .endpoint
        .clone()
        .or_else(|| env("AWS_ENDPOINT_URL_S3"))
        .or_else(|| env("AWS_ENDPOINT_URL"))
        .filter(|e| !e.trim().is_empty())
}

/// Opens the archive named by `settings.url` (`default_url` when empty).
pub async fn open_store(
    settings: &ArchiveSettings,
    default_url: &str,
    env: EnvLookup<'_>,
) -> Result<ArchiveStore> {
    let url = if settings.url.is_empty() {
        default_url
    } else {
        &settings.url
    };
    match ArchiveUrl::parse(url)? {
        ArchiveUrl::Local(dir) => {
            std::fs::create_dir_all(&dir).map_err(|e| ArchiveError::io(&dir, e))?;
            let fs = LocalFileSystem::new_with_prefix(&dir)?.with_automatic_cleanup(true);
            Ok(ArchiveStore::from_store(Arc::new(fs), Path::default(), url))
        }
        ArchiveUrl::Memory => Ok(ArchiveStore::from_store(
            Arc::new(InMemory::new()),
            Path::default(),
            url,
        )),
        ArchiveUrl::S3 { bucket, prefix } => {
            let s3 = s3_store(settings, &bucket, env).await?;
            Ok(ArchiveStore::from_store(s3, Path::from(prefix), url))
        }
    }
}

async fn s3_store(
    settings: &ArchiveSettings,
    bucket: &str,
    env: EnvLookup<'_>,
) -> Result<Arc<dyn ObjectStore>> {
    let endpoint = resolve_endpoint(settings, env);
    let region =
        RegionProviderChain::first_try(settings.region.clone().map(aws_config::Region::new))
            .or_else(aws_config::environment::region::EnvironmentVariableRegionProvider::new())
            .or_else(aws_config::profile::ProfileFileRegionProvider::new())
            .or_else(aws_config::Region::from_static("us-east-1"));
    let region_name = region
        .region()
        .await
        .map(|r| r.to_string())
        .unwrap_or_else(|| "us-east-1".into());
    let retry = RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(15),
            base: 2.0,
        },
        max_retries: settings.max_retries,
        retry_timeout: Duration::from_millis(settings.retry_timeout_ms),
    };
    let http_endpoint = endpoint
        .as_deref()
        .is_some_and(|e| e.starts_with("http://"));
    let client = ClientOptions::new()
        .with_timeout(Duration::from_millis(settings.request_timeout_ms))
        .with_connect_timeout(Duration::from_millis(settings.connect_timeout_ms))
        .with_allow_http(settings.allow_http.unwrap_or(http_endpoint));
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_region(&region_name)
        .with_retry(retry)
        .with_client_options(client)
        .with_virtual_hosted_style_request(!settings.path_style.unwrap_or(endpoint.is_some()));
    if let Some(e) = &endpoint {
        builder = builder.with_endpoint(e);
    }
    let credentials: Arc<dyn CredentialProvider<Credential = AwsCredential>> =
        match (&settings.access_key_id, &settings.secret_access_key) {
            (Some(key_id), Some(secret)) => {
                Arc::new(object_store::StaticCredentialProvider::new(AwsCredential {
                    key_id: key_id.clone(),
                    secret_key: secret.clone(),
                    token: settings.session_token.clone(),
                }))
            }
            _ => {
                let chain =
                    aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
                        .region(aws_config::Region::new(region_name.clone()))
                        .build()
                        .await;
                Arc::new(AwsChainCredentials::new(chain))
            }
        };
    builder = builder.with_credentials(credentials);
    Ok(Arc::new(builder.build()?))
}

/// Credentials from the AWS SDK's provider chain (environment, profile, web identity, ECS,
/// IMDS), cached until five minutes before they expire.
#[derive(Debug)]
pub struct AwsChainCredentials<P> {
    provider: P,
    cached: tokio::sync::Mutex<Option<(Arc<AwsCredential>, Option<SystemTime>)>>,
}

/// Credentials are refreshed this long before they expire.
const REFRESH_BEFORE_EXPIRY: Duration = Duration::from_secs(300);

impl<P: ProvideCredentials> AwsChainCredentials<P> {
    /// Wraps an SDK credentials provider.
    pub fn new(provider: P) -> Self {
        Self {
            provider,
            cached: tokio::sync::Mutex::new(None),
        }
    }
}

#[async_trait]
impl<P: ProvideCredentials + std::fmt::Debug> CredentialProvider for AwsChainCredentials<P> {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        let mut cached = self.cached.lock().await;
        if let Some((cred, expiry)) = cached.as_ref() {
            let fresh = expiry.is_none_or(|e| {
                e.duration_since(SystemTime::now())
                    .is_ok_and(|left| left > REFRESH_BEFORE_EXPIRY)
            });
            if fresh {
                return Ok(Arc::clone(cred));
            }
        }
        let creds = self
            .provider
            .provide_credentials()
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "S3",
                source: format!(
                    "no AWS credentials: {} (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, a profile, \
                     web identity, or archive.access_key_id)",
                    aws_smithy_error_chain(&e)
                )
                .into(),
            })?;
        let cred = Arc::new(AwsCredential {
            key_id: creds.access_key_id().to_string(),
            secret_key: creds.secret_access_key().to_string(),
            token: creds.session_token().map(str::to_string),
        });
        *cached = Some((Arc::clone(&cred), creds.expiry()));
        Ok(cred)
    }
}

fn aws_smithy_error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The default archive URL for a data directory: `file://<data dir>/archive`.
pub fn default_url(data_dir: &FsPath) -> Result<String> {
    let dir =
        std::path::absolute(data_dir.join("archive")).map_err(|e| ArchiveError::io(data_dir, e))?;
    url::Url::from_directory_path(&dir)
        .map(|u| u.to_string())
        .map_err(|()| bad_url(&dir.display().to_string(), "not an absolute path"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_credential_types::Credentials;

    #[test]
    fn archive_urls_parse_or_name_the_setting() {
        assert_eq!(
            ArchiveUrl::parse("s3://sediment-archive/prod/cluster-a").unwrap(),
            ArchiveUrl::S3 {
                bucket: "sediment-archive".into(),
                prefix: "prod/cluster-a".into()
            }
        );
        assert_eq!(
            ArchiveUrl::parse("s3://bucket").unwrap(),
            ArchiveUrl::S3 {
                bucket: "bucket".into(),
                prefix: String::new()
            }
        );
        assert_eq!(
            ArchiveUrl::parse("file:///var/lib/sediment/archive").unwrap(),
            ArchiveUrl::Local("/var/lib/sediment/archive".into())
        );
        for bad in [
            "",
            "s3://",
            "s3://ab/x",
            "ftp://x/y",
            "file://otherhost/x",
            "/no/scheme",
        ] {
            let e = ArchiveUrl::parse(bad).unwrap_err().to_string();
            assert!(e.contains("archive.url"), "{bad}: {e}");
        }
    }

    #[test]
    fn endpoint_comes_from_settings_then_the_aws_variables() {
        let env = |k: &str| match k {
            "AWS_ENDPOINT_URL" => Some("http://general:9000".to_string()),
            "AWS_ENDPOINT_URL_S3" => Some("http://s3-only:9000".to_string()),
            _ => None,
        };
        let mut s = ArchiveSettings::default();
        assert_eq!(
            resolve_endpoint(&s, &env).as_deref(),
            Some("http://s3-only:9000")
        );
        let only_general =
            |k: &str| (k == "AWS_ENDPOINT_URL").then(|| "http://general:9000".into());
        assert_eq!(
            resolve_endpoint(&s, &only_general).as_deref(),
            Some("http://general:9000")
        );
        s.endpoint = Some("https://minio.example:9000".into());
        assert_eq!(
            resolve_endpoint(&s, &env).as_deref(),
            Some("https://minio.example:9000")
        );
        assert_eq!(
            resolve_endpoint(&ArchiveSettings::default(), &|_| None),
            None
        );
    }

    #[derive(Debug)]
    struct Counting {
        calls: std::sync::atomic::AtomicUsize,
        expires_in: Duration,
    }

    impl ProvideCredentials for Counting {
        fn provide_credentials<'a>(
            &'a self,
        ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            aws_credential_types::provider::future::ProvideCredentials::ready(Ok(Credentials::new(
                format!("key{n}"),
                "secret",
                Some("token".into()),
                Some(SystemTime::now() + self.expires_in),
                "test",
            )))
        }
    }

    #[tokio::test]
    async fn chain_credentials_are_cached_until_near_expiry() {
        let long = AwsChainCredentials::new(Counting {
            calls: Default::default(),
            expires_in: Duration::from_secs(3600),
        });
        let a = long.get_credential().await.unwrap();
        let b = long.get_credential().await.unwrap();
        assert_eq!((a.key_id.as_str(), b.key_id.as_str()), ("key0", "key0"));
        assert_eq!(a.token.as_deref(), Some("token"));
        // Credentials about to expire are fetched again on every use.
        let short = AwsChainCredentials::new(Counting {
            calls: Default::default(),
            expires_in: Duration::from_secs(60),
        });
        short.get_credential().await.unwrap();
        assert_eq!(short.get_credential().await.unwrap().key_id, "key1");
    }
}
