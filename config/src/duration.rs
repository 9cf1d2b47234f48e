//! Durations as operators write them: `30s`, `250ms`, `1m`, `0s`.
//!
//! The syntax is humantime's, both ways, so what `/config` prints can be pasted back into a file.
//! A bare number is refused rather than guessed at: `timeout: 30` could mean seconds or
//! milliseconds, and a wrong guess is a thousandfold error nobody notices until production.

use std::time::Duration;

use serde::Deserialize;

pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_duration(*d))
}

/// For an `Option<Duration>` that is skipped when `None`.
pub fn serialize_option<S: serde::Serializer>(
    d: &Option<Duration>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => serialize(d, s),
        None => s.serialize_none(),
    }
}

pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(d)?;
    parse(&text).map_err(serde::de::Error::custom)
}

/// Parses humantime syntax; the error is a complete, one-line message naming `text`.
pub fn parse(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if !trimmed.is_empty() && trimmed.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(format!(
            "duration `{trimmed}` has no unit: add one, e.g. `{trimmed}s` or `{trimmed}ms`"
        ));
    }
    humantime::parse_duration(trimmed).map_err(|e| {
        let why = match e {
            humantime::DurationError::UnknownUnit { unit, .. } => {
                format!(": unknown unit `{unit}`")
            }
            humantime::DurationError::NumberOverflow => ": too large".to_owned(),
            _ => String::new(),
        };
        format!(
            "invalid duration `{trimmed}`{why}; expected a number and a unit, e.g. 250ms, 10s, 1m"
        )
    })
}
