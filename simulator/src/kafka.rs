//! Kafka output: topic creation and an idempotent producer (`enable.idempotence=true`,
//! `acks=all`) that counts what the broker acknowledged.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rdkafka::ClientContext;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::DeliveryResult;
use rdkafka::producer::{BaseRecord, Producer, ProducerContext, ThreadedProducer};

/// Counts acknowledgements and keeps the first delivery error.
#[derive(Default)]
pub struct Acks {
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Acks {}

impl ProducerContext for Acks {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_error.lock().unwrap_or_else(|p| p.into_inner());
                first.get_or_insert_with(|| e.to_string());
            }
        }
    }
}

/// Kafka errors, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum KafkaOutputError {
    /// Client or admin failure.
    #[error("kafka: {what}")]
    Client {
        /// What failed.
        what: String,
        /// The client's error.
        #[source]
        source: KafkaError,
    },
    /// Messages the broker did not acknowledge.
    #[error("{failed} messages were not delivered (first error: {first})")]
    Undelivered {
        /// How many.
        failed: u64,
        /// The first delivery error.
        first: String,
    },
}

fn client(what: &str) -> impl FnOnce(KafkaError) -> KafkaOutputError + '_ {
    move |source| KafkaOutputError::Client {
        what: what.to_string(),
        source,
    }
}

/// Creates the topics that do not exist yet, with `partitions` partitions each.
pub fn ensure_topics(
    brokers: &str,
    properties: &BTreeMap<String, String>,
    topics: &[&str],
    partitions: i32,
) -> Result<(), KafkaOutputError> {
    let mut cfg = ClientConfig::new();
    cfg.set("bootstrap.servers", brokers);
    for (k, v) in properties {
        cfg.set(k, v);
    }
    let admin: AdminClient<DefaultClientContext> = cfg
        .create()
        .map_err(client("cannot create the admin client"))?;
    // a broker that cannot be reached fails here, fast and by name
    admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(15))
        .map_err(|source| KafkaOutputError::Client {
            what: format!("cannot reach the brokers {brokers}"),
            source,
        })?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| NewTopic::new(t, partitions, TopicReplication::Fixed(1)))
        .collect();
    let opts = AdminOptions::new()
        .request_timeout(Some(Duration::from_secs(30)))
        .operation_timeout(Some(Duration::from_secs(30)));
    let results = futures::executor::block_on(admin.create_topics(&new, &opts))
        .map_err(client("cannot create topics"))?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => {
                return Err(KafkaOutputError::Client {
                    what: format!("cannot create topic {t}"),
                    source: KafkaError::AdminOp(code),
                });
            }
        }
    }
    Ok(())
}

/// The producer.
pub struct Output {
    producer: ThreadedProducer<Acks>,
}

impl Output {
    /// An idempotent producer for `brokers`; `properties` are added last (TLS, SASL, tuning).
    pub fn connect(
        brokers: &str,
        properties: &BTreeMap<String, String>,
    ) -> Result<Output, KafkaOutputError> {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "10")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "1000000")
            .set("queue.buffering.max.kbytes", "1048576")
            .set("message.timeout.ms", "300000");
        for (k, v) in properties {
            cfg.set(k, v);
        }
        let producer = cfg
            .create_with_context(Acks::default())
            .map_err(client("cannot create the producer"))?;
        Ok(Output { producer })
    }

    /// Queues one message; waits while librdkafka's queue is full.
    pub fn send(&self, topic: &str, key: &str, payload: &[u8]) -> Result<(), KafkaOutputError> {
        let mut record = BaseRecord::to(topic).key(key).payload(payload);
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => return Err(client("cannot queue a message")(e)),
            }
        }
    }

    /// Messages acknowledged so far.
    pub fn delivered(&self) -> u64 {
        self.producer.context().delivered.load(Ordering::Relaxed)
    }

    /// Waits until every queued message is acknowledged (or failed); an error if any failed.
    pub fn finish(&self, timeout: Duration) -> Result<u64, KafkaOutputError> {
        self.producer
            .flush(timeout)
            .map_err(client("cannot flush the producer"))?;
        let acks = self.producer.context();
        let failed = acks.failed.load(Ordering::Relaxed);
        if failed > 0 {
            let first = acks
                .first_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
                .unwrap_or_default();
            return Err(KafkaOutputError::Undelivered { failed, first });
        }
        Ok(acks.delivered.load(Ordering::Relaxed))
    }
}
