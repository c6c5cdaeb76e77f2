//! Azul plugins, the pure part: what the dispatcher writes under a plugin's deployment key,
//! and which consumer groups are the plugin's. No IO; [`crate::directory`] reads Redis.
//!
//! The dispatcher names a plugin's groups `<topic prefix>-azul-<plugin key>-<sub>`, where the
//! plugin key starts with the plugin's `kafka_prefix` and `sub` is `live`, `expedite` or
//! `historic`. The Azul scaler keeps every group that contains the `kafka_prefix` anywhere,
//! so plugin `Tika` also counted `...-azul-Tika2-...` and `...-azul-OldTika-...`; here the
//! name must start with `<topic prefix>-azul-<kafka_prefix>`, followed by its end or `-`.

/// The suffix of a plugin's backfill groups, counted only with `includeHistoric`.
const HISTORIC_SUFFIX: &str = "-historic";

/// The `kafka_prefix` in the dispatcher's value for a plugin (JSON
/// `{"kafka_prefix": "<name>-<version>-<model>", ...}`), or why there is none.
pub fn kafka_prefix_of(value: &str) -> Result<String, String> {
    let parsed: serde_json::Value = serde_json::from_str(value)
        .map_err(|err| format!("the dispatcher's value is not JSON ({err})"))?;
    match parsed.get("kafka_prefix") {
        Some(serde_json::Value::String(prefix)) if !prefix.trim().is_empty() => Ok(prefix.clone()),
        Some(other) => Err(format!(
            "the dispatcher's kafka_prefix is {other}, expected a non-empty string"
        )),
        None => Err("the dispatcher's value has no kafka_prefix".to_owned()),
    }
}

/// Whether consumer group `group` belongs to the plugin whose groups start with
/// `<topic_prefix>-azul-<kafka_prefix>` (`azul-<kafka_prefix>` when the topic prefix is
/// empty), compared case-insensitively as Azul does, followed by the name's end or `-`.
/// `-historic` groups count only when `include_historic`.
pub fn is_plugin_group(
    group: &str,
    topic_prefix: &str,
    kafka_prefix: &str,
    include_historic: bool,
) -> bool {
    let head = if topic_prefix.is_empty() {
        format!("azul-{kafka_prefix}")
    } else {
        format!("{topic_prefix}-azul-{kafka_prefix}")
    };
    let group_lower = group.to_lowercase();
    let head = head.to_lowercase();
    let Some(rest) = group_lower.strip_prefix(&head) else {
        return false;
    };
    if !(rest.is_empty() || rest.starts_with('-')) {
        return false;
    }
    include_historic || !group_lower.ends_with(HISTORIC_SUFFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dispatcher_value_gives_the_kafka_prefix() {
        assert_eq!(
            kafka_prefix_of(r#"{"kafka_prefix":"Tika-1.2-binary"}"#),
            Ok("Tika-1.2-binary".to_owned())
        );
        assert_eq!(
            kafka_prefix_of(r#"{"kafka_prefix": "X", "other": 1}"#),
            Ok("X".to_owned())
        );
        for bad in [
            "",
            "Tika",
            "{}",
            r#"{"kafka_prefix":""}"#,
            r#"{"kafka_prefix":7}"#,
            "[1]",
        ] {
            assert!(kafka_prefix_of(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn groups_match_exactly_where_azul_matched_substrings() {
        let tp = "qa01";
        let kp = "Unbox-2024.10.04-binary";
        let live = "qa01-azul-Unbox-2024.10.04-binary-allsrc-sourced.extracted-ELH-live";
        assert!(is_plugin_group(live, tp, kp, false));
        assert!(
            is_plugin_group(&live.to_uppercase(), tp, kp, false),
            "any case"
        );
        assert!(is_plugin_group(
            "qa01-azul-Unbox-2024.10.04-binary-expedite",
            tp,
            kp,
            false
        ));
        let historic = "qa01-azul-Unbox-2024.10.04-binary-historic";
        assert!(!is_plugin_group(historic, tp, kp, false));
        assert!(is_plugin_group(historic, tp, kp, true));
        assert!(is_plugin_group(
            "qa01-azul-Unbox-2024.10.04-binary",
            tp,
            kp,
            false
        ));
        // Decoys Azul's substring match counted.
        for decoy in [
            "qa01-azul-Unbox-2024.10.04-binaryX-live",
            "qa01-azul-OldUnbox-2024.10.04-binary-live",
            "qa02-azul-Unbox-2024.10.04-binary-live",
            "qa01-azul-x-Unbox-2024.10.04-binary-live",
            "qa01-Unbox-2024.10.04-binary-live",
            "Unbox-2024.10.04-binary-live",
        ] {
            assert!(!is_plugin_group(decoy, tp, kp, true), "{decoy}");
        }
        // Without a topic prefix, the name starts with azul-.
        assert!(is_plugin_group(
            "azul-Tika-1.2-binary-live",
            "",
            "Tika-1.2-binary",
            false
        ));
        assert!(!is_plugin_group(
            "x-azul-Tika-1.2-binary-live",
            "",
            "Tika-1.2-binary",
            false
        ));
    }
}
