//! How the values both the environment and trigger metadata hold may be spelled: one parser
//! of booleans for every key, with the spellings each source accepts. Pure.

/// The spellings of a boolean a key accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BoolSpelling {
    /// Go's `strconv.ParseBool`, which KEDA's Kafka trigger reads its flags with: `1`, `t`,
    /// `T`, `TRUE`, `true`, `True` and their false counterparts.
    Go,
    /// `true` or `false` in any case, as the Azul scaler reads `includeHistoric`.
    Word,
    /// What operators write in environment variables: `true`/`false`, `1`/`0`, `yes`/`no`,
    /// `on`/`off`, in any case.
    Setting,
}

/// `value` as a boolean spelled as `spelling` accepts (surrounding spaces allowed); `None`
/// for anything else.
pub fn parse_bool(value: &str, spelling: BoolSpelling) -> Option<bool> {
    let value = value.trim();
    match spelling {
        BoolSpelling::Go => match value {
            "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
            "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
            _ => None,
        },
        BoolSpelling::Word => match value.to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        },
        BoolSpelling::Setting => match value.to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" | "on" => Some(true),
            "false" | "0" | "no" | "off" => Some(false),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_spelling_accepts_its_own_words_only() {
        use BoolSpelling::{Go, Setting, Word};
        for (value, spelling, expected) in [
            ("t", Go, Some(true)),
            (" False ", Go, Some(false)),
            ("tRuE", Go, None),
            ("yes", Go, None),
            ("tRuE", Word, Some(true)),
            (" FALSE", Word, Some(false)),
            ("1", Word, None),
            ("on", Setting, Some(true)),
            ("No", Setting, Some(false)),
            ("t", Setting, None),
        ] {
            assert_eq!(
                parse_bool(value, spelling),
                expected,
                "{value:?} as {spelling:?}"
            );
        }
    }
}
