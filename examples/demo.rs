//! Demo load for `scripts/demo`: produces records, commits them slowly as a lagging consumer
//! would, and asks lagscaler the three questions KEDA asks, printing the answers.
//!
//! Usage: demo <bootstrap> <scaler-addr> <topic> <seconds>

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use grpcio::{CallOption, ChannelBuilder, Client, EnvBuilder};
use lagscaler::grpc::proto;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const GROUP: &str = "demo-workers";
const PARTITIONS: i32 = 3;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [bootstrap, scaler, topic, seconds] = args.as_slice() else {
        anyhow::bail!("usage: demo <bootstrap> <scaler-addr> <topic> <seconds>");
    };
    let run_for = Duration::from_secs(seconds.parse()?);

    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "0")
        .set("batch.num.messages", "1")
        .create()?;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .create()?;
    let env = Arc::new(EnvBuilder::new().cq_count(1).build());
    let client = Client::new(ChannelBuilder::new(env).connect(scaler));
    let metadata: HashMap<String, String> = [
        ("consumerGroup", GROUP),
        ("topic", topic.as_str()),
        ("lagThreshold", "20"),
        ("activationLagThreshold", "5"),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value.to_owned()))
    .collect();
    let object = proto::ScaledObjectRef {
        name: "demo".to_owned(),
        namespace: "default".to_owned(),
        scalerMetadata: metadata,
        ..Default::default()
    };
    let option = || CallOption::default().timeout(Duration::from_secs(3));

    let spec = client.unary_call(&proto::METHOD_GET_METRIC_SPEC, &object, option())?;
    for spec in &spec.metricSpecs {
        println!("metric {} target {}", spec.metricName, spec.targetSizeFloat);
    }
    println!("lagscaler answers from its latest poll (every 1 s); the true lag is counted now");

    // The producer writes 12 records a round; the consumer commits 8, so lag grows until the
    // consumer speeds up half-way through and drains it.
    let mut produced = [0i64; PARTITIONS as usize];
    let mut committed = [0i64; PARTITIONS as usize];
    let started = Instant::now();
    let mut round = 0u32;
    while started.elapsed() < run_for {
        round += 1;
        let draining = started.elapsed() > run_for / 2;
        for partition in 0..PARTITIONS {
            let idx = partition as usize;
            let to_produce = if draining { 1 } else { 4 };
            for _ in 0..to_produce {
                producer
                    .send(
                        BaseRecord::<(), _>::to(topic)
                            .partition(partition)
                            .payload("x"),
                    )
                    .map_err(|(err, _)| err)?;
                producer.flush(Duration::from_secs(5))?;
                produced[idx] += 1;
            }
            let step = if draining { 6 } else { 2 };
            committed[idx] = (committed[idx] + step).min(produced[idx]);
        }
        let mut offsets = TopicPartitionList::new();
        for partition in 0..PARTITIONS {
            offsets.add_partition_offset(
                topic,
                partition,
                Offset::Offset(committed[partition as usize]),
            )?;
        }
        consumer.commit(&offsets, CommitMode::Sync)?;

        let request = proto::GetMetricsRequest {
            scaledObjectRef: Some(object.clone()).into(),
            ..Default::default()
        };
        let metrics = client.unary_call(&proto::METHOD_GET_METRICS, &request, option());
        let active = client.unary_call(&proto::METHOD_IS_ACTIVE, &object, option());
        let true_lag: i64 = produced.iter().zip(&committed).map(|(p, c)| p - c).sum();
        match (metrics, active) {
            (Ok(metrics), Ok(active)) => println!(
                "round {round:>3}: lagscaler lag {:>4} active {:<5} (true lag now {true_lag})",
                metrics.metricValues[0].metricValue, active.result
            ),
            (Err(err), _) | (_, Err(err)) => println!("round {round:>3}: {err}"),
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    Ok(())
}
