//! Demo load for `scripts/demo`: produces records, commits them slowly as a lagging consumer
//! (a real member of its group) would, and asks lagscaler what KEDA would ask in each metric
//! mode, printing the answers.
//!
//! Usage: demo <bootstrap> <scaler-addr> <topic> <seconds>

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use grpcio::{CallOption, ChannelBuilder, Client, EnvBuilder};
use lagscaler::grpc::proto;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

const GROUP: &str = "demo-workers";
const PARTITIONS: i32 = 3;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [bootstrap, scaler, topic, seconds] = args.as_slice() else {
        anyhow::bail!("usage: demo <bootstrap> <scaler-addr> <topic> <seconds>");
    };
    let run_for = Duration::from_secs(seconds.parse()?);

    create_topic(bootstrap, topic)?;
    // Batched and compressed, as applications produce.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("linger.ms", "5")
        .set("compression.type", "lz4")
        .create()?;
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .create()?;
    // The group's starting offsets, committed while it has no member (a member's commit
    // is refused until it has joined, which on a fresh broker can take a while).
    commit_start(bootstrap, topic)?;
    // A member of the group, so that lagscaler sees one consumer and its throughput.
    consumer.subscribe(&[topic.as_str()])?;
    let env = Arc::new(EnvBuilder::new().cq_count(1).build());
    let client = Client::new(ChannelBuilder::new(env).connect(scaler));
    let object = |mode: &str| {
        let metadata: HashMap<String, String> = [
            ("consumerGroup", GROUP),
            ("topic", topic.as_str()),
            ("lagThreshold", "20"),
            ("activationLagThreshold", "5"),
            ("metric", mode),
            ("targetEtaSeconds", "20"),
            ("allowIdleConsumers", "true"),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect();
        proto::ScaledObjectRef {
            name: format!("demo-{mode}"),
            namespace: "default".to_owned(),
            scalerMetadata: metadata,
            ..Default::default()
        }
    };
    let objects = [object("lag"), object("eta"), object("replicas")];
    let option = || CallOption::default().timeout(Duration::from_secs(3));

    for object in &objects {
        let spec = client.unary_call(&proto::METHOD_GET_METRIC_SPEC, object, option())?;
        for spec in &spec.metricSpecs {
            println!("metric {} target {}", spec.metricName, spec.targetSizeFloat);
        }
    }
    println!(
        "lagscaler answers from its latest poll (every 1 s, rates over 10 s); the true lag is \
         counted now"
    );

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
                produced[idx] += 1;
            }
            let step = if draining { 6 } else { 2 };
            committed[idx] = (committed[idx] + step).min(produced[idx]);
        }
        producer.flush(Duration::from_secs(5))?;
        let mut offsets = TopicPartitionList::new();
        for partition in 0..PARTITIONS {
            offsets.add_partition_offset(
                topic,
                partition,
                Offset::Offset(committed[partition as usize]),
            )?;
        }
        // Serves the group protocol (joining, heartbeats); the records themselves are not used.
        while consumer.poll(Duration::ZERO).is_some() {}
        if let Err(err) = consumer.commit(&offsets, CommitMode::Sync) {
            println!("round {round:>3}: commit failed ({err}); retrying next round");
        }

        let answer = |mode: usize| {
            let request = proto::GetMetricsRequest {
                scaledObjectRef: Some(objects[mode].clone()).into(),
                ..Default::default()
            };
            match client.unary_call(&proto::METHOD_GET_METRICS, &request, option()) {
                Ok(metrics) => format!("{:.1}", metrics.metricValues[0].metricValueFloat),
                Err(err) => format!("error ({err})"),
            }
        };
        let active = client
            .unary_call(&proto::METHOD_IS_ACTIVE, &objects[0], option())
            .map_or_else(|err| format!("error ({err})"), |a| a.result.to_string());
        let true_lag: i64 = produced.iter().zip(&committed).map(|(p, c)| p - c).sum();
        println!(
            "round {round:>3}: lag {:>5}  eta {:>10}s  replicas {:>4}  active {active:<5} \
             (true lag now {true_lag})",
            answer(0),
            answer(1),
            answer(2),
        );
        std::thread::sleep(Duration::from_secs(2));
    }
    Ok(())
}

/// Creates `topic` with [`PARTITIONS`] partitions unless it exists.
fn create_topic(bootstrap: &str, topic: &str) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let new_topic = NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1));
    let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    for result in futures::executor::block_on(admin.create_topics([&new_topic], &options))? {
        match result {
            Ok(_) => {}
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, err)) => anyhow::bail!("create topic {name}: {err}"),
        }
    }
    // Metadata reaches every part of the broker a moment after the creation.
    std::thread::sleep(Duration::from_millis(500));
    Ok(())
}

/// Commits offset 0 on every partition, retrying while a new broker's group coordinator is
/// still loading, so that the first answers are about a group that exists.
fn commit_start(bootstrap: &str, topic: &str) -> anyhow::Result<()> {
    let committer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", GROUP)
        .set("enable.auto.commit", "false")
        .create()?;
    let mut offsets = TopicPartitionList::new();
    for partition in 0..PARTITIONS {
        offsets.add_partition_offset(topic, partition, Offset::Offset(0))?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match committer.commit(&offsets, CommitMode::Sync) {
            Ok(()) => return Ok(()),
            Err(err) if Instant::now() > deadline => {
                anyhow::bail!("the group's first commit failed for 30 s: {err}")
            }
            // The group coordinator is still loading on a fresh broker.
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}
