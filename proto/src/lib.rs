//! `lakehouse-proto`: the Protobuf messages of lakehouse, compiled from the `.proto` files
//! beside this crate (`lakehouse/v1/*.proto`, package `lakehouse.v1`), which are their
//! documentation: the event messages of `events.proto` and the `Lakehouse` gRPC service of
//! `service.proto` (client in `v1::lakehouse_client`, server in `v1::lakehouse_server`).
//!
//! ```
//! use lakehouse_proto::v1::{MarketTrade, Side};
//! use prost::Message;
//!
//! let t = MarketTrade { symbol: "AAPL".into(), price: "0.1".into(), ..Default::default() };
//! let bytes = t.encode_to_vec();
//! assert_eq!(MarketTrade::decode(bytes.as_slice()).unwrap().price, "0.1");
//! assert_eq!(Side::try_from(1), Ok(Side::Buy));
//! ```

pub use prost;
pub use prost_types;

/// Package `lakehouse.v1`.
#[allow(missing_docs, unreachable_pub, clippy::doc_lazy_continuation)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/lakehouse.v1.rs"));
}

/// The encoded `FileDescriptorSet` of every `.proto` file (with its imports), for gRPC server
/// reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/lakehouse_descriptor.bin"));
