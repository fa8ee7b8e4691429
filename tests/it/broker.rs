//! What the project relies on from the broker process (tansu), checked against the real
//! thing: explicit topic creation, idempotent produce, group consumption, and the durable
//! engine keeping data across a broker restart.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use lakehouse_tests::kafka::create_topic;
use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};

async fn produce(brokers: &str, topic: &str, n: usize) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let sends: Vec<_> = (0..n)
        .map(|i| {
            let key = format!("k{}", i % 17);
            let payload = format!("{{\"n\":{i}}}");
            let producer = producer.clone();
            let topic = topic.to_string();
            async move {
                producer
                    .send(
                        FutureRecord::to(&topic).key(&key).payload(&payload),
                        Duration::from_secs(30),
                    )
                    .await
                    .map_err(|(e, _)| e)
                    .unwrap()
            }
        })
        .collect();
    futures::future::join_all(sends).await;
}

/// Consumes in a group until `n` distinct payloads were seen (or a deadline); returns them.
fn consume(brokers: &str, topic: &str, group: &str, n: usize) -> BTreeSet<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "6000")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut seen = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < n && Instant::now() < deadline {
        if let Some(m) = consumer.poll(Duration::from_millis(200)) {
            let m = m.unwrap();
            seen.insert(String::from_utf8(m.payload().unwrap().to_vec()).unwrap());
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_supports_idempotent_produce_and_group_consume() {
    let broker = lakehouse_tests::kafka().unwrap();
    let brokers = broker.addr();
    create_topic(&brokers, "it-events", 4).await.unwrap();
    produce(&brokers, "it-events", 2_000).await;
    let brokers2 = brokers.clone();
    let seen =
        tokio::task::spawn_blocking(move || consume(&brokers2, "it-events", "it-group", 2_000))
            .await
            .unwrap();
    assert_eq!(seen.len(), 2_000, "broker log:\n{}", broker.log_text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_broker_keeps_messages_across_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = lakehouse_tests::free_port();
    let brokers = format!("127.0.0.1:{port}");
    {
        let _broker = lakehouse_tests::kafka_durable(dir.path(), port).unwrap();
        create_topic(&brokers, "it-durable", 2).await.unwrap();
        produce(&brokers, "it-durable", 300).await;
    } // killed here
    let broker = lakehouse_tests::kafka_durable(dir.path(), port).unwrap();
    let b = brokers.clone();
    let seen =
        tokio::task::spawn_blocking(move || consume(&b, "it-durable", "it-durable-group", 300))
            .await
            .unwrap();
    assert_eq!(seen.len(), 300, "broker log:\n{}", broker.log_text());
}

/// A consumer assigned at an offset inside a producer batch gets exactly the messages from that
/// offset on: ingest resumes at `committed + 1`, which is usually mid-batch. tansu 0.6's
/// `memory://` engine fails this (its fetch skips to the next batch whose base offset is at or
/// above the requested one, silently dropping the rest of the current batch), so every test that
/// resumes a consumer runs on the SQLite engine, which stores and fetches single records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_from_the_middle_of_a_producer_batch_starts_at_that_offset() {
    use rdkafka::TopicPartitionList;
    let dir = tempfile::tempdir().unwrap();
    let broker = lakehouse_tests::kafka_durable(dir.path(), lakehouse_tests::free_port()).unwrap();
    let brokers = broker.addr();
    create_topic(&brokers, "it-mid", 1).await.unwrap();
    let msgs: Vec<(Vec<u8>, Vec<u8>)> = (0..5_000)
        .map(|i| (b"k".to_vec(), format!("{i}").into_bytes()))
        .collect();
    let produced = lakehouse_tests::kafka::produce(&brokers, "it-mid", &msgs)
        .await
        .unwrap();
    assert_eq!(produced[&0].len(), 5_000);
    for start in [0_i64, 1, 537, 2_001, 4_998] {
        let b = brokers.clone();
        let got = tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = ClientConfig::new()
                .set("bootstrap.servers", &b)
                .set("group.id", "it-mid")
                .set("enable.auto.commit", "false")
                .create()
                .unwrap();
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset("it-mid", 0, rdkafka::Offset::Offset(start))
                .unwrap();
            consumer.assign(&tpl).unwrap();
            let mut got = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(20);
            while got.len() < 3 && Instant::now() < deadline {
                if let Some(m) = consumer.poll(Duration::from_millis(200)) {
                    let m = m.unwrap();
                    got.push((
                        m.offset(),
                        String::from_utf8(m.payload().unwrap().to_vec()).unwrap(),
                    ));
                }
            }
            got
        })
        .await
        .unwrap();
        let want: Vec<(i64, String)> = (start..(start + 3).min(5_000))
            .map(|o| (o, o.to_string()))
            .collect();
        assert_eq!(got, want, "assigned at {start}");
    }
}
