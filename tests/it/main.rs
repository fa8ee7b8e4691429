//! Integration tests against real processes: the lake on memory, file and a real S3 server
//! (moto), racing writers, atomic replace under a concurrent reader, append-only L1, and the
//! Python `deltalake` package reading what the lake wrote.

mod batch;
mod broker;
mod ingest;
mod lake_contract;
mod python;
mod s3;
mod serve;
mod simulate;
mod speed;
