//! The lake: a root URL, its object store and the catalog's tables under it.

use chrono::{DateTime, Utc};
use deltalake::kernel::StructType;
use deltalake::kernel::engine::arrow_conversion::TryIntoKernel;
use deltalake::logstore::ObjectStoreRef;
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaVersion};
use url::Url;

use crate::catalog::{self, Layer, TableDef};
use crate::error::{Error, Result};
use crate::storage::{self, LakeConfig};
use crate::table::{Table, Version};

/// A lake root with its object store. Cheap to clone; clones share the store (so two clones of
/// a `memory://` lake see the same tables).
#[derive(Clone, Debug)]
pub struct Lake {
    root: Url,
    store: ObjectStoreRef,
}

/// What `table list` shows of one catalog table.
#[derive(Clone, Debug)]
pub struct TableSummary {
    /// Path under the root.
    pub name: &'static str,
    /// Layer.
    pub layer: Layer,
    /// Latest version, `None` when the table has not been created yet.
    pub version: Option<Version>,
    /// Number of data files in the latest version.
    pub files: usize,
    /// One-line description.
    pub description: &'static str,
}

impl Lake {
    /// Opens the lake described by `cfg`: resolves the root, builds the store and, on S3,
    /// refuses an endpoint that does not honour conditional put.
    pub async fn open(cfg: &LakeConfig) -> Result<Self> {
        let (root, store) = storage::open_store(cfg).await?;
        Ok(Lake { root, store })
    }

    /// The root URL (ends with `/`).
    pub fn root(&self) -> &Url {
        &self.root
    }

    /// The root object store (for S3, the bucket).
    pub fn store(&self) -> &ObjectStoreRef {
        &self.store
    }

    /// The path in [`Lake::store`] of an object at `relative` under the root (for state that
    /// is not a table, such as speed-layer checkpoints).
    pub fn object_path(&self, relative: &str) -> deltalake::Path {
        let base = crate::storage::path_in_store(&self.root);
        let rel = relative.trim_matches('/');
        if base.as_ref().is_empty() {
            deltalake::Path::from(rel)
        } else {
            deltalake::Path::from(format!("{}/{rel}", base.as_ref()))
        }
    }

    /// The URL of a table under the root.
    pub fn table_url(&self, name: &str) -> Result<Url> {
        self.root
            .join(&format!("{}/", name.trim_matches('/')))
            .map_err(|e| Error::InvalidLocation {
                url: format!("{}{name}", self.root),
                reason: e.to_string(),
            })
    }

    fn builder(&self, name: &str) -> Result<DeltaTableBuilder> {
        let url = self.table_url(name)?;
        Ok(DeltaTableBuilder::from_url(url.clone())
            .map_err(|e| Error::delta(name, None, e))?
            .with_storage_backend(self.store.clone(), url))
    }

    fn unloaded(&self, name: &str) -> Result<DeltaTable> {
        self.builder(name)?
            .build()
            .map_err(|e| Error::delta(name, None, e))
    }

    async fn exists(&self, name: &str) -> Result<bool> {
        self.unloaded(name)?
            .verify_deltatable_existence()
            .await
            .map_err(|e| Error::delta(name, None, e))
    }

    fn not_found(&self, name: &str) -> Error {
        Error::TableNotFound {
            table: name.to_string(),
            url: self
                .table_url(name)
                .map(|u| u.to_string())
                .unwrap_or_default(),
        }
    }

    /// Opens the newest version of a table.
    pub async fn table(&self, name: &str) -> Result<Table> {
        self.open_as_of(name, DeltaVersion::Newest).await
    }

    /// Time travel: a table as of `version`.
    pub async fn table_at_version(&self, name: &str, version: Version) -> Result<Table> {
        self.open_as_of(name, DeltaVersion::Version(version)).await
    }

    /// Time travel: a table as of the newest commit at or before `at`.
    pub async fn table_at_timestamp(&self, name: &str, at: DateTime<Utc>) -> Result<Table> {
        self.open_as_of(name, DeltaVersion::Timestamp(at)).await
    }

    async fn open_as_of(&self, name: &str, as_of: DeltaVersion) -> Result<Table> {
        if !self.exists(name).await? {
            return Err(self.not_found(name));
        }
        let builder = self.builder(name)?;
        let builder = match as_of {
            DeltaVersion::Newest => builder,
            DeltaVersion::Version(v) => builder.with_version(v),
            DeltaVersion::Timestamp(at) => builder.with_timestamp(at),
        };
        let table = builder
            .load()
            .await
            .map_err(|e| Error::delta(name, None, e))?;
        Ok(Table::new(name, catalog::table(name), table))
    }

    /// Opens a catalog table, creating it with its schema, partitioning and properties if it
    /// does not exist. Safe against a concurrent creator: the loser opens the winner's table.
    pub async fn create_table(&self, def: &TableDef) -> Result<Table> {
        if self.exists(def.name).await? {
            return self.table(def.name).await;
        }
        let schema: StructType = def.schema.as_ref().try_into_kernel()?;
        let created = self
            .unloaded(def.name)?
            .create()
            .with_table_name(def.name.replace('/', "_"))
            .with_comment(def.description)
            .with_columns(schema.fields().cloned())
            .with_partition_columns(def.partition_by.iter().copied())
            .with_configuration(def.properties().into_iter().map(|(k, v)| (k, Some(v))))
            .with_save_mode(SaveMode::Ignore)
            .await;
        match created {
            Ok(t) => Ok(Table::new(def.name, Some(def.clone()), t)),
            Err(e) => {
                // another process may have created it between the check and the commit
                if self.exists(def.name).await? {
                    self.table(def.name).await
                } else {
                    Err(Error::delta(def.name, None, e))
                }
            }
        }
    }

    /// Creates every catalog table that is missing, without loading those that exist (a
    /// check of each one's log: loading the 22 snapshots of a lake whose tables have 80-odd
    /// versions took 0.45 s before each batch run, 0.01 s checked).
    pub async fn create_missing(&self) -> Result<()> {
        for def in catalog::tables() {
            if !self.exists(def.name).await? {
                self.create_table(&def).await?;
            }
        }
        Ok(())
    }

    /// Creates every catalog table that is missing, and opens them all.
    pub async fn ensure_catalog(&self) -> Result<Vec<Table>> {
        let mut out = Vec::new();
        for def in catalog::tables() {
            out.push(self.create_table(&def).await?);
        }
        Ok(out)
    }

    /// The catalog's tables with their state in this lake.
    pub async fn list(&self) -> Result<Vec<TableSummary>> {
        let mut out = Vec::new();
        for def in catalog::tables() {
            let (version, files) = match self.table(def.name).await {
                Ok(t) => (t.version(), t.file_uris()?.len()),
                Err(Error::TableNotFound { .. }) => (None, 0),
                Err(e) => return Err(e),
            };
            out.push(TableSummary {
                name: def.name,
                layer: def.layer,
                version,
                files,
                description: def.description,
            });
        }
        Ok(out)
    }
}
