//! The lake's error type and the coarse error kinds that retry loops and the serving layer read.

use crate::kafka::{Offset, TopicPartition};

/// What a caller can do about an error: the only thing retry loops and `to_status` look at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The input or configuration is wrong; retrying will not help.
    InvalidInput,
    /// A table, version or object does not exist.
    NotFound,
    /// Another writer won a race; re-read state and decide again.
    Conflict,
    /// A transient failure (network, throttling); retrying may succeed.
    Retryable,
    /// A bug or an unexpected state.
    Internal,
}

/// Errors of the `lake` crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A decimal literal could not be parsed exactly.
    #[error("invalid decimal {literal:?}: {reason}")]
    InvalidDecimal {
        /// The text that was parsed.
        literal: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// A decimal computation left the representable range.
    #[error("decimal overflow in {operation}")]
    DecimalOverflow {
        /// The operation that overflowed.
        operation: &'static str,
    },
    /// A timestamp could not be parsed.
    #[error("invalid timestamp {literal:?}: {reason}")]
    InvalidTimestamp {
        /// The text that was parsed.
        literal: String,
        /// Why it was rejected.
        reason: String,
    },
    /// A configuration value is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The lake URL could not be used.
    #[error("invalid lake location {url:?}: {reason}")]
    InvalidLocation {
        /// The URL or path given.
        url: String,
        /// Why it was rejected.
        reason: String,
    },
    /// The object store does not honour conditional put (If-None-Match), so Delta commits
    /// could silently overwrite each other.
    #[error(
        "object store at {url} does not honour conditional put (PUT with If-None-Match: *): {detail}. \
         Delta commits need put-if-absent; use an S3 endpoint that supports it (AWS S3, MinIO, moto) \
         and do not set conditional-put = \"disabled\""
    )]
    ConditionalPutUnsupported {
        /// The lake root URL.
        url: String,
        /// What the self-test observed.
        detail: String,
    },
    /// A table does not exist under the lake root.
    #[error("table {table} does not exist at {url}")]
    TableNotFound {
        /// The table's path under the lake root.
        table: String,
        /// The table's URL.
        url: String,
    },
    /// An append repeated or skipped offsets that the table already has.
    #[error(
        "offsets for {partition} in {table} start at {first} but the table has committed up to {committed:?}: \
         these offsets were already written or a gap would open"
    )]
    OffsetsOutOfOrder {
        /// The table written.
        table: String,
        /// The topic partition.
        partition: TopicPartition,
        /// First offset of the rejected range.
        first: Offset,
        /// Last committed offset for the partition, if any.
        committed: Option<Offset>,
    },
    /// A concurrent writer committed first (same application id or conflicting files).
    #[error(
        "commit to {table} lost a race with a concurrent writer (read version {read_version:?}): {detail}"
    )]
    CommitConflict {
        /// The table written.
        table: String,
        /// The version the losing writer had read.
        read_version: Option<i64>,
        /// What delta-rs reported.
        detail: String,
    },
    /// The data does not match the table's schema.
    #[error("data for {table} does not match its schema: {detail}")]
    SchemaMismatch {
        /// The table written.
        table: String,
        /// What is wrong.
        detail: String,
    },
    /// The table is append-only and the operation would remove rows.
    #[error("table {table} is append-only: {operation} is not allowed")]
    AppendOnly {
        /// The table.
        table: String,
        /// The refused operation.
        operation: String,
    },
    /// A Delta protocol or log error.
    #[error("delta error on {table}: {source}")]
    Delta {
        /// The table.
        table: String,
        /// The underlying error.
        #[source]
        source: deltalake::DeltaTableError,
    },
    /// An object store request failed.
    #[error("object store request failed: {0}")]
    Store(#[from] deltalake::ObjectStoreError),
    /// Arrow data could not be built or converted.
    #[error("arrow error: {0}")]
    Arrow(#[from] deltalake::arrow::error::ArrowError),
}

/// Result with the lake's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The coarse kind of this error.
    pub fn kind(&self) -> ErrorKind {
        use deltalake::DeltaTableError as D;
        match self {
            Self::InvalidDecimal { .. }
            | Self::DecimalOverflow { .. }
            | Self::InvalidTimestamp { .. }
            | Self::Config(_)
            | Self::InvalidLocation { .. }
            | Self::ConditionalPutUnsupported { .. }
            | Self::SchemaMismatch { .. }
            | Self::AppendOnly { .. } => ErrorKind::InvalidInput,
            Self::TableNotFound { .. } => ErrorKind::NotFound,
            Self::OffsetsOutOfOrder { .. } | Self::CommitConflict { .. } => ErrorKind::Conflict,
            Self::Store(e) => match e {
                deltalake::ObjectStoreError::NotFound { .. } => ErrorKind::NotFound,
                deltalake::ObjectStoreError::AlreadyExists { .. }
                | deltalake::ObjectStoreError::Precondition { .. } => ErrorKind::Conflict,
                _ => ErrorKind::Retryable,
            },
            Self::Delta { source, .. } => match source {
                D::NotATable(_) | D::InvalidTableLocation(_) => ErrorKind::NotFound,
                D::VersionAlreadyExists(_) => ErrorKind::Conflict,
                D::ObjectStore { .. } => ErrorKind::Retryable,
                _ => ErrorKind::Internal,
            },
            Self::Arrow(_) => ErrorKind::Internal,
        }
    }

    /// Wrap a delta-rs error for `table`, turning commit races and append-only refusals into
    /// their typed variants.
    pub(crate) fn delta(
        table: &str,
        read_version: Option<i64>,
        source: deltalake::DeltaTableError,
    ) -> Self {
        use deltalake::DeltaTableError as D;
        use deltalake::kernel::transaction::TransactionError as T;
        match &source {
            D::Transaction {
                source: T::DeltaTableAppendOnly,
            } => Self::AppendOnly {
                table: table.to_string(),
                operation: "removing data".to_string(),
            },
            D::Transaction {
                source: T::CommitConflict(c),
            } => Self::CommitConflict {
                table: table.to_string(),
                read_version,
                detail: c.to_string(),
            },
            D::Transaction {
                source: T::MaxCommitAttempts(_),
            }
            | D::VersionAlreadyExists(_) => Self::CommitConflict {
                table: table.to_string(),
                read_version,
                detail: source.to_string(),
            },
            D::NotATable(_) => Self::TableNotFound {
                table: table.to_string(),
                url: source.to_string(),
            },
            _ => Self::Delta {
                table: table.to_string(),
                source,
            },
        }
    }
}
