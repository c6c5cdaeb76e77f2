//! A plugin watch's poll (an Azul entity): the groups the dispatcher's Redis names for the
//! plugin, their offsets and members, and the plugin's state logged when it changes.

use std::time::Instant;

use log::{info, warn};

use super::Watcher;
use crate::directory::Lookup;
use crate::kafka::{KafkaClient, KafkaError, Topics};
use crate::lag::PartitionOffsets;
use crate::plugin;

/// What a plugin's poll found out about the plugin, to log changes only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum PluginState {
    /// Neither the dispatcher nor lagscaler knows the plugin.
    Unknown,
    /// Its kafka_prefix is known, from the dispatcher or remembered, and these groups match.
    Known {
        kafka_prefix: String,
        remembered: bool,
        groups: Vec<String>,
    },
}

impl Watcher {
    /// A plugin's sample: the offsets of every group of the plugin, over every topic each
    /// committed on, and the largest member count among them (each consumer of the plugin
    /// joins each of its groups). A plugin nobody knows, or with no group yet, has nothing
    /// to consume: an empty sample (lag 0, inactive), as the Azul scaler answers, with a
    /// warning.
    pub(super) fn read_plugin(
        &mut self,
        client: &KafkaClient,
        name: &str,
        include_historic: bool,
        since: Instant,
    ) -> Result<(Vec<PartitionOffsets>, Option<usize>), String> {
        let lookup = self.directory.lookup(name)?;
        let Some(kafka_prefix) = lookup.kafka_prefix() else {
            self.note_plugin_state(PluginState::Unknown);
            return Ok((Vec::new(), Some(0)));
        };
        let topic_prefix = self.directory.topic_prefix();
        let groups: Vec<String> = client
            .list_groups(since)
            .map_err(|err| err.to_string())?
            .iter()
            .filter(|listed| {
                plugin::is_plugin_group(&listed.name, topic_prefix, kafka_prefix, include_historic)
            })
            .map(|listed| listed.name.clone())
            .collect();
        let mut offsets = Vec::new();
        // The largest count, unknown if any group's is.
        let mut members: Result<usize, KafkaError> = Ok(0);
        for group in &groups {
            match client.snapshot(group, Topics::Committed, since, self.key.lag_rule.isolation) {
                Ok(found) => offsets.extend(found),
                // A group that never committed has no position to measure from yet.
                Err(KafkaError::NoTopics { .. }) => {}
                Err(err) => return Err(client.with_login_refusal(err.to_string())),
            }
            if let Ok(most) = members {
                members = client
                    .group_members(group, since)
                    .map(|count| most.max(count));
            }
        }
        let members = self.note_members(members);
        self.note_plugin_state(PluginState::Known {
            kafka_prefix: kafka_prefix.to_owned(),
            remembered: matches!(lookup, Lookup::Remembered(_)),
            groups,
        });
        Ok((offsets, members))
    }

    /// Logs a plugin watch's state when it changes.
    fn note_plugin_state(&mut self, state: PluginState) {
        if self.plugin_state.as_ref() == Some(&state) {
            return;
        }
        match &state {
            PluginState::Unknown => warn!(
                "{}: the dispatcher's Redis has no key for this plugin and lagscaler never saw \
                 one: answering lag 0 and inactive until it appears",
                self.key
            ),
            PluginState::Known {
                kafka_prefix,
                remembered,
                groups,
            } => {
                let from = if *remembered {
                    "remembered (the dispatcher's key is gone or Redis is down)"
                } else {
                    "from the dispatcher"
                };
                if groups.is_empty() {
                    warn!(
                        "{}: kafka_prefix {kafka_prefix} {from}, but no consumer group matches: \
                         answering lag 0 and inactive until one appears",
                        self.key
                    );
                } else {
                    info!(
                        "{}: kafka_prefix {kafka_prefix} {from}; groups {}",
                        self.key,
                        groups.join(", ")
                    );
                }
            }
        }
        self.plugin_state = Some(state);
    }
}
