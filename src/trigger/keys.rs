//! Which keys a trigger may hold: KEDA's own Kafka keys, lagscaler's, the plugin keys of the
//! Azul scaler; `<key>FromEnv` resolved as KEDA does; the entity and the cluster they name.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashMap};

use super::values::{invalid, quote};
use super::{Entity, TriggerError};
use crate::config::{self, ClusterSet, KafkaConfig};

/// Keys of KEDA's own in an external trigger's metadata, which KEDA forwards with the rest;
/// they are not lagscaler's. KEDA's `external` and `external-push` scalers read
/// `scalerAddress` and `unsafeSsl` (v2.13 on), `tlsCertFile` (v2.13 to v2.16) and
/// `enableTLS` (v2.17 on) from the metadata, and `caCert`, `tlsClientCert` and
/// `tlsClientKey` from the TriggerAuthentication, which may stand in the metadata too.
pub(super) const KEDA_KEYS: &[&str] = &[
    "scalerAddress",
    "enableTLS",
    "unsafeSsl",
    "tlsCertFile",
    "caCert",
    "tlsClientCert",
    "tlsClientKey",
];

/// Keys this version reads.
pub const OWN_KEYS: &[&str] = &[
    "entityType",
    "entityName",
    "consumerGroup",
    "topic",
    "topicPattern",
    "bootstrapServers",
    "cluster",
    "lagThreshold",
    "activationLagThreshold",
    "offsetResetPolicy",
    "isolationLevel",
    "partitionLimitation",
    "allowIdleConsumers",
    "excludePersistentLag",
    "scaleToZeroOnInvalidOffset",
    "limitToPartitionsWithLag",
    "ensureEvenDistributionOfPartitions",
    "metric",
    "targetEtaSeconds",
    "timeLagThreshold",
    "activationTimeLagThreshold",
    "idleWindow",
    "pluginName",
    "targetSize",
    "includeHistoric",
    "version",
];

/// The suffix of a key whose value KEDA read from the workload's environment
/// (`consumerGroupFromEnv`): it forwards the resolved value under that key.
pub(super) const FROM_ENV: &str = "FromEnv";

/// Keys a plugin trigger (`entityType=plugin`) reads.
pub(super) const PLUGIN_KEYS: &[&str] = &[
    "entityType",
    "entityName",
    "pluginName",
    "targetSize",
    "includeHistoric",
    "metric",
    "targetEtaSeconds",
    "timeLagThreshold",
    "activationLagThreshold",
    "activationTimeLagThreshold",
    "idleWindow",
];

/// The metadata with every `<key>FromEnv` of a key this trigger reads renamed to `<key>`, as
/// KEDA means it: the value KEDA resolved from the workload's environment. A key given both
/// ways takes the plain one, as KEDA does (trigger metadata before resolved environment).
/// Borrowed unchanged when there is no such key, as on most calls.
pub(super) fn resolve_from_env(
    metadata: &HashMap<String, String>,
) -> Cow<'_, HashMap<String, String>> {
    if !metadata.keys().any(|key| key.ends_with(FROM_ENV)) {
        return Cow::Borrowed(metadata);
    }
    let mut resolved = HashMap::with_capacity(metadata.len());
    let mut from_env = Vec::new();
    for (key, value) in metadata {
        match key.strip_suffix(FROM_ENV) {
            Some(base) if OWN_KEYS.contains(&base) => from_env.push((base, value)),
            _ => {
                resolved.insert(key.clone(), value.clone());
            }
        }
    }
    for (base, value) in from_env {
        resolved
            .entry(base.to_owned())
            .or_insert_with(|| value.clone());
    }
    Cow::Owned(resolved)
}

pub(super) fn check_keys(metadata: &HashMap<String, String>) -> Result<(), TriggerError> {
    // Sorted, so that the same bad map always names the same key first.
    let keys: BTreeSet<&str> = metadata.keys().map(String::as_str).collect();
    for key in keys {
        if OWN_KEYS.contains(&key) || KEDA_KEYS.contains(&key) {
            continue;
        }
        return Err(TriggerError::UnknownKey {
            key: quote(key),
            accepted: format!("one of the keys {}", OWN_KEYS.join(", ")),
        });
    }
    Ok(())
}

pub(super) fn check_entity(metadata: &HashMap<String, String>) -> Result<Entity, TriggerError> {
    // Azul's README spells the key entityName; KEDA's users write entityType.
    let mut entity = None;
    for key in ["entityType", "entityName"] {
        let named = match metadata.get(key).map(|value| value.trim()) {
            None => continue,
            Some("consumerGroup") => Entity::ConsumerGroup,
            Some("plugin") => Entity::Plugin,
            Some(other) => return Err(invalid(key, other, "consumerGroup or plugin")),
        };
        if entity.is_some_and(|first| first != named) {
            return Err(invalid(
                key,
                &metadata[key],
                "the same entity as entityType (give one of the two keys)",
            ));
        }
        entity = Some(named);
    }
    Ok(entity.unwrap_or(Entity::ConsumerGroup))
}

/// The cluster a trigger reads (`None`: the default one), from `cluster` and
/// `bootstrapServers`. Only configured clusters can be reached: a ScaledObject in any
/// namespace must not point lagscaler at an arbitrary host.
pub(super) fn pick_cluster(
    metadata: &HashMap<String, String>,
    clusters: &ClusterSet,
) -> Result<Option<String>, TriggerError> {
    let named = match metadata.get("cluster").map(|name| name.trim()) {
        None | Some("" | "default") => None,
        Some(name) => {
            if !clusters.named.contains_key(name) {
                return Err(TriggerError::Invalid {
                    key: "cluster".to_owned(),
                    value: quote(name),
                    accepted: format!(
                        "a configured cluster: {} (configured with SCALER_KAFKA_* and \
                         SCALER_KAFKA_CLUSTERS_FILE on the scaler's side)",
                        clusters.names().join(", ")
                    ),
                });
            }
            Some(name.to_owned())
        }
    };
    let Some(value) = metadata.get("bootstrapServers") else {
        return Ok(named);
    };
    let wanted: Option<BTreeSet<String>> =
        config::parse_bootstrap(value).map(|servers| servers.into_iter().collect());
    let same = |cluster: &KafkaConfig| {
        let configured: BTreeSet<String> = cluster.bootstrap_servers.iter().cloned().collect();
        wanted.as_ref() == Some(&configured)
    };
    let found = std::iter::once((None, &clusters.default))
        .chain(
            clusters
                .named
                .iter()
                .map(|(name, cluster)| (Some(name), cluster)),
        )
        .find(|(_, cluster)| same(cluster))
        .map(|(name, _)| name.cloned());
    match found {
        Some(found) if metadata.get("cluster").is_none() || found == named => Ok(found),
        _ => {
            // Clusters are named, their brokers never listed: the caller may be any
            // ScaledObject in any namespace.
            let allowed = match &named {
                Some(name) => format!("cluster {name}'s"),
                None if metadata.contains_key("cluster") => "the default cluster's".to_owned(),
                None => format!("a configured cluster's ({})", clusters.names().join(", ")),
            };
            Err(TriggerError::Invalid {
                key: "bootstrapServers".to_owned(),
                value: quote(value),
                accepted: format!(
                    "{allowed} bootstrap servers, or no bootstrapServers at all; lagscaler \
                     only connects to clusters configured on the scaler side"
                ),
            })
        }
    }
}
