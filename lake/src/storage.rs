//! One place that turns a lake URL plus options into an object store: `file://` (and plain
//! paths), `memory://` and `s3://` (AWS, MinIO or any S3-compatible server). Against S3 the
//! store must honour conditional put, which Delta commits rely on; [`open_store`] checks it.

use std::fmt;
use std::sync::{Arc, Once};
use std::time::Duration;

use deltalake::DeltaResult;
use deltalake::logstore::object_store::aws::{AmazonS3Builder, S3ConditionalPut};
use deltalake::logstore::object_store::local::LocalFileSystem;
use deltalake::logstore::object_store::memory::InMemory;
use deltalake::logstore::object_store::path::Path;
use deltalake::logstore::object_store::{
    ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig,
};
use deltalake::logstore::{
    LogStore, LogStoreFactory, ObjectStoreRef, StorageConfig, default_logstore, logstore_factories,
};
use serde::{Deserialize, Serialize};
use url::Url;

use crate::error::{Error, Result};

/// A secret: deserialized like its value, never printed.
#[derive(Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(transparent)]
pub struct Sensitive<T>(pub T);

impl<T> fmt::Debug for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"***\"")
    }
}

/// S3 connection settings (used when the lake root is an `s3://bucket/prefix` URL).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct S3Config {
    /// AWS region (MinIO and moto accept any; default `us-east-1`).
    pub region: Option<String>,
    /// Endpoint URL for S3-compatible servers, e.g. `http://127.0.0.1:9000`.
    pub endpoint: Option<String>,
    /// Access key id.
    pub access_key_id: Option<String>,
    /// Secret access key.
    pub secret_access_key: Option<Sensitive<String>>,
    /// Session token for temporary credentials.
    pub session_token: Option<Sensitive<String>>,
    /// Allow plain `http://` endpoints (MinIO, moto on loopback).
    #[serde(default)]
    pub allow_http: bool,
    /// Use virtual-hosted-style requests (`bucket.host`) instead of path style.
    #[serde(default)]
    pub virtual_hosted_style: bool,
    /// `etag` (default: PUT with If-None-Match) or `disabled`. With `disabled` the lake refuses
    /// to start, since Delta commits could then overwrite each other.
    pub conditional_put: Option<String>,
}

/// Where the lake lives.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct LakeConfig {
    /// Root URL (`file:///data/lake`, `s3://bucket/lake`, `memory:///`) or a local path.
    pub root: String,
    /// S3 settings for `s3://` roots.
    #[serde(default)]
    pub s3: S3Config,
}

impl Default for LakeConfig {
    fn default() -> Self {
        LakeConfig {
            root: "./lake".into(),
            s3: S3Config::default(),
        }
    }
}

/// Resolves a lake root (URL or local path) to a URL ending in `/`. Local paths are made
/// absolute against the current directory.
pub fn root_url(root: &str) -> Result<Url> {
    let invalid = |reason: String| Error::InvalidLocation {
        url: root.to_string(),
        reason,
    };
    let mut url = match Url::parse(root) {
        Ok(url) if url.scheme().len() > 1 => url,
        _ => {
            let path = std::path::absolute(root).map_err(|e| invalid(e.to_string()))?;
            Url::from_directory_path(&path).map_err(|_| invalid("not an absolute path".into()))?
        }
    };
    match url.scheme() {
        "file" | "memory" => {}
        "s3" | "s3a" => {
            if url.host_str().is_none_or(str::is_empty) {
                return Err(invalid(
                    "an s3 URL needs a bucket: s3://bucket/prefix".into(),
                ));
            }
        }
        other => {
            return Err(invalid(format!(
                "unsupported scheme {other:?}: use file://, s3:// or memory://"
            )));
        }
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// Builds the root object store for a lake root URL (for S3: the bucket's root).
pub fn build_store(root: &Url, cfg: &S3Config) -> Result<ObjectStoreRef> {
    match root.scheme() {
        "file" => {
            let path = root.to_file_path().map_err(|_| Error::InvalidLocation {
                url: root.to_string(),
                reason: "not a local path".into(),
            })?;
            std::fs::create_dir_all(&path).map_err(|e| Error::InvalidLocation {
                url: root.to_string(),
                reason: format!("cannot create directory: {e}"),
            })?;
            Ok(Arc::new(LocalFileSystem::new()))
        }
        "memory" => Ok(Arc::new(InMemory::new())),
        "s3" | "s3a" => {
            register_s3_logstore();
            let bucket = root.host_str().unwrap_or_default();
            let mut b = AmazonS3Builder::new()
                .with_bucket_name(bucket)
                .with_region(cfg.region.as_deref().unwrap_or("us-east-1"))
                .with_allow_http(cfg.allow_http)
                .with_virtual_hosted_style_request(cfg.virtual_hosted_style)
                .with_retry(RetryConfig {
                    max_retries: 5,
                    retry_timeout: Duration::from_secs(60),
                    ..RetryConfig::default()
                });
            if let Some(e) = &cfg.endpoint {
                b = b.with_endpoint(e.trim_end_matches('/'));
            }
            if let Some(k) = &cfg.access_key_id {
                b = b.with_access_key_id(k);
            }
            if let Some(s) = &cfg.secret_access_key {
                b = b.with_secret_access_key(&s.0);
            }
            if let Some(t) = &cfg.session_token {
                b = b.with_token(&t.0);
            }
            let conditional = match cfg.conditional_put.as_deref() {
                None | Some("etag") => S3ConditionalPut::ETagMatch,
                Some("disabled") => S3ConditionalPut::Disabled,
                Some(other) => {
                    return Err(Error::Config(format!(
                        "lake.s3.conditional-put must be \"etag\" or \"disabled\", not {other:?}"
                    )));
                }
            };
            b = b.with_conditional_put(conditional);
            Ok(Arc::new(b.build().map_err(Error::Store)?))
        }
        other => Err(Error::InvalidLocation {
            url: root.to_string(),
            reason: format!("unsupported scheme {other:?}"),
        }),
    }
}

/// The object-store path of a URL inside its store (the URL path without the leading `/`).
pub(crate) fn path_in_store(url: &Url) -> Path {
    Path::from(url.path().trim_matches('/'))
}

/// Checks that the store honours put-if-absent: a second `PUT` of the same key with
/// `If-None-Match: *` must fail. Stores that ignore the header are refused, because two Delta
/// writers could then both "win" the same version.
pub async fn check_conditional_put(store: &dyn ObjectStore, root: &Url) -> Result<()> {
    let probe = Path::from(format!(
        "{}/_lakehouse/conditional-put-probe/{}",
        path_in_store(root),
        uuid::Uuid::new_v4()
    ));
    let create = PutOptions {
        mode: PutMode::Create,
        ..PutOptions::default()
    };
    let unsupported = |detail: String| Error::ConditionalPutUnsupported {
        url: root.to_string(),
        detail,
    };
    let first = store
        .put_opts(&probe, PutPayload::from_static(b"1"), create.clone())
        .await;
    match first {
        Ok(_) => {}
        Err(deltalake::ObjectStoreError::NotImplemented { .. }) => {
            return Err(unsupported(
                "the client is configured without conditional put".into(),
            ));
        }
        Err(e) => return Err(Error::Store(e)),
    }
    let second = store
        .put_opts(&probe, PutPayload::from_static(b"2"), create)
        .await;
    let _ = store.delete(&probe).await;
    match second {
        Err(deltalake::ObjectStoreError::AlreadyExists { .. }) => Ok(()),
        Ok(_) => Err(unsupported(
            "a second PUT with If-None-Match: * to the same key succeeded".into(),
        )),
        Err(deltalake::ObjectStoreError::NotImplemented { .. }) => Err(unsupported(
            "the client is configured without conditional put".into(),
        )),
        Err(e) => Err(Error::Store(e)),
    }
}

/// Opens the root store of a lake and, for S3, runs the conditional-put self-test.
pub async fn open_store(cfg: &LakeConfig) -> Result<(Url, ObjectStoreRef)> {
    let root = root_url(&cfg.root)?;
    let store = build_store(&root, &cfg.s3)?;
    if matches!(root.scheme(), "s3" | "s3a") {
        check_conditional_put(store.as_ref(), &root).await?;
    }
    Ok((root, store))
}

/// delta-rs's default log store commits with `PutMode::Create`, which is exactly the
/// conditional put the S3 self-test verified; register it for `s3://` so no DynamoDB lock or
/// AWS SDK is needed.
#[derive(Debug, Default)]
struct ConditionalPutLogStoreFactory;

impl LogStoreFactory for ConditionalPutLogStoreFactory {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &StorageConfig,
    ) -> DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

fn register_s3_logstore() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for scheme in ["s3://", "s3a://"] {
            if let Ok(url) = Url::parse(scheme) {
                logstore_factories().insert(url, Arc::new(ConditionalPutLogStoreFactory));
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_resolve_to_directory_urls() {
        assert_eq!(root_url("memory:///").unwrap().as_str(), "memory:///");
        assert_eq!(
            root_url("s3://bucket-one/lake").unwrap().as_str(),
            "s3://bucket-one/lake/"
        );
        let local = root_url("relative/lake").unwrap();
        assert_eq!(local.scheme(), "file");
        assert!(local.path().ends_with("/relative/lake/"));
        assert!(root_url("ftp://x/y").is_err());
        assert!(root_url("s3:///nobucket").is_err());
    }

    #[test]
    fn secrets_are_masked() {
        let cfg = S3Config {
            secret_access_key: Some(Sensitive("hunter2".into())),
            ..S3Config::default()
        };
        assert!(!format!("{cfg:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn memory_store_honours_conditional_put() {
        let root = root_url("memory:///").unwrap();
        let store = build_store(&root, &S3Config::default()).unwrap();
        check_conditional_put(store.as_ref(), &root).await.unwrap();
    }
}
