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

/// One consumed message.
#[derive(Clone, Debug)]
pub struct Consumed {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key.
    pub key: Option<Vec<u8>>,
    /// Payload.
    pub payload: Vec<u8>,
    /// The message timestamp (the producer's create time), epoch milliseconds.
    pub timestamp_ms: Option<i64>,
}

/// Reads every partition of `topic` from the beginning until `expected` messages arrived,
/// then for `linger` more to catch any extra one (tansu's end offsets are not reliable, so the
/// caller says how many it expects). Fails if fewer arrive within `timeout`.
pub fn consume_all(
    brokers: &str,
    topic: &str,
    expected: usize,
    linger: Duration,
    timeout: Duration,
) -> Result<Vec<Consumed>> {
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::message::Message;
    use rdkafka::{Offset, TopicPartitionList};

    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "lakehouse-tests-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()?;
    let md = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
    let partitions = md
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().len())
        .context("topic missing from the metadata")?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut out = Vec::with_capacity(expected);
    let started = std::time::Instant::now();
    let mut complete_at = None;
    loop {
        if let Some(t) = complete_at {
            if std::time::Instant::now() >= t {
                break;
            }
        } else if started.elapsed() > timeout {
            anyhow::bail!(
                "{topic}: {} of {expected} messages after {timeout:?}",
                out.len()
            );
        }
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m?;
            out.push(Consumed {
                partition: m.partition(),
                offset: m.offset(),
                key: m.key().map(<[u8]>::to_vec),
                payload: m.payload().unwrap_or_default().to_vec(),
                timestamp_ms: m.timestamp().to_millis(),
            });
        }
        if complete_at.is_none() && out.len() >= expected {
            complete_at = Some(std::time::Instant::now() + linger);
        }
    }
    Ok(out)
}
