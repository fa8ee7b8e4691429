//! Kafka helpers for tests: topic creation and an idempotent producer that reports where each
//! message landed.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};

/// Creates `topic` with `partitions` partitions (tansu does not auto-create topics).
pub async fn create_topic(brokers: &str, topic: &str, partitions: i32) -> Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let results = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await?;
    for r in results {
        r.map_err(|(t, e)| anyhow::anyhow!("cannot create topic {t}: {e}"))?;
    }
    Ok(())
}

/// An idempotent producer (`enable.idempotence=true`, `acks=all`).
pub fn producer(brokers: &str) -> Result<FutureProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .set("message.max.bytes", "10000000")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "1000000")
        .create()?)
}

/// Produces every `(key, payload)` to `topic` and returns, per partition, the offsets they
/// got, in order.
pub async fn produce(
    brokers: &str,
    topic: &str,
    messages: &[(Vec<u8>, Vec<u8>)],
) -> Result<BTreeMap<i32, Vec<i64>>> {
    let producer = producer(brokers)?;
    let mut out: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    for chunk in messages.chunks(20_000) {
        let sends = chunk.iter().map(|(k, v)| {
            let producer = &producer;
            async move {
                producer
                    .send(
                        FutureRecord::to(topic).key(k).payload(v),
                        Duration::from_secs(60),
                    )
                    .await
                    .map_err(|(e, _)| e)
            }
        });
        for r in futures::future::join_all(sends).await {
            let d = r.context("produce failed")?;
            out.entry(d.partition).or_default().push(d.offset);
        }
    }
    producer.flush(Duration::from_secs(30))?;
    for offsets in out.values_mut() {
        offsets.sort_unstable();
    }
    Ok(out)
}
