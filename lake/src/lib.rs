//! `lakehouse-lake`: the storage foundation every layer of lakehouse shares.
//!
//! - Domain types: [`EventTime`] (UTC microseconds), [`BusinessDate`] and the
//!   [`BusinessCalendar`] that derives it, exact [`Decimal`] money (Arrow `Decimal128(38, 8)`),
//!   Kafka [`Topic`]/[`Partition`]/[`Offset`] and per-partition [`OffsetRanges`].
//! - [`schema`]: the Arrow schemas of every table, with the L1 Kafka columns; [`events`]: the
//!   Rust event types and their Arrow builders.
//! - [`storage`]: a lake URL plus options -> an object store (`file://`, `memory://`, `s3://`),
//!   with the S3 conditional-put self-test.
//! - [`catalog`] and [`Lake`]: the L1, L2, L3 and system tables under one root, created on
//!   demand with their partitioning and properties.
//! - [`Table`]: exactly-once appends (data + one Delta `txn` per Kafka partition in one commit),
//!   atomic partition replace, time travel and history.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use lakehouse_lake::{catalog, Lake, LakeConfig, PipelineId, TopicPartition, Offset, OffsetRanges};
//!
//! let lake = Lake::open(&LakeConfig { root: "memory:///".into(), ..Default::default() }).await?;
//! let mut accounts = lake.create_table(&catalog::table(catalog::names::REF_ACCOUNTS).unwrap()).await?;
//! assert_eq!(accounts.version(), Some(0));
//!
//! // an exactly-once append records the last offset per partition in the same commit
//! let mut orders = lake.create_table(&catalog::table(catalog::names::ORDERS).unwrap()).await?;
//! let tp = TopicPartition::new("orders", 0);
//! let mut ranges = OffsetRanges::new();
//! ranges.record(&tp, Offset(0));
//! ranges.record(&tp, Offset(41));
//! orders.append_exactly_once(&PipelineId::new("ingest"), vec![], &ranges).await?;
//! assert_eq!(orders.committed_offset(&PipelineId::new("ingest"), &tp).await?, Some(Offset(41)));
//! # Ok::<(), lakehouse_lake::Error>(()) }).unwrap();
//! ```

pub mod catalog;
pub mod decimal;
pub mod decode;
mod direct;
pub mod error;
pub mod events;
pub mod kafka;
mod lake;
pub mod metrics;
pub mod positions;
pub mod reference;
pub mod schema;
pub mod storage;
pub mod table;
pub mod time;

pub use decimal::Decimal;
pub use error::{Error, ErrorKind, Result};
pub use kafka::{Offset, OffsetRange, OffsetRanges, Partition, PipelineId, Topic, TopicPartition};
pub use lake::{Lake, TableSummary};
pub use storage::{LakeConfig, S3Config, Sensitive};
pub use table::{Commit, Compaction, StoredFile, Table, Vacuum, Version};
pub use time::{BusinessCalendar, BusinessDate, EventTime};
