//! One error type for everything that can be wrong with a mesh file, rendered on one line.
//!
//! `FILE:LINE:COLUMN: FIELD.PATH: message` is what compilers print, so editors and terminals
//! make it clickable, and it fits one log line: the proxy refuses a bad file with exactly this
//! line and keeps its last good snapshot. serde-saphyr's own rendering is a multi-line snippet;
//! we take its parts (location, error kind) and write the message ourselves, so that it names
//! the key or value at fault and what would have been accepted.

use std::fmt;

use serde_path_to_error::{Path, Segment};
use serde_saphyr::{Error as YamlError, Location, MessageFormatter, UserMessageFormatter};

/// Why a configuration was refused, and where.
///
/// `Display` is one line: `FILE:LINE:COLUMN: FIELD.PATH: message`, where location and path are
/// left out when unknown (a file that cannot be read has neither; a syntax error has no path).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    file: String,
    line: Option<u64>,
    column: Option<u64>,
    path: Option<String>,
    message: String,
}

impl ConfigError {
    /// The file name as given to [`crate::parse`] or [`crate::load`].
    pub fn file(&self) -> &str {
        &self.file
    }

    /// 1-based line of the offending node.
    pub fn line(&self) -> Option<u64> {
        self.line
    }

    /// 1-based column (in characters) of the offending node.
    pub fn column(&self) -> Option<u64> {
        self.column
    }

    /// Field path of the offending node, like `services[2].listen`.
    pub fn path(&self) -> Option<&str> {
        self.path.as_deref()
    }

    /// The message alone, without file, location or path.
    pub fn message(&self) -> &str {
        &self.message
    }

    pub(crate) fn new(
        file: &str,
        at: Option<Location>,
        path: Option<String>,
        message: &str,
    ) -> Self {
        let at = at.filter(|l| *l != Location::UNKNOWN && l.line() > 0);
        ConfigError {
            file: one_line(file),
            line: at.map(|l| l.line()),
            column: at.map(|l| l.column()),
            path: path.map(|p| one_line(&p)).filter(|p| !p.is_empty()),
            message: one_line(message),
        }
    }

    pub(crate) fn io(file: &str, err: &std::io::Error) -> Self {
        Self::new(file, None, None, &format!("cannot read: {err}"))
    }

    /// Shapes a serde-saphyr error (syntax, or a type caught while deserializing) into one line.
    pub(crate) fn yaml(file: &str, text: &str, err: &YamlError, path: Option<&Path>) -> Self {
        let at = err.location();
        let inner = innermost(err);
        let (message, keep_last) = match inner {
            YamlError::SerdeUnknownField {
                field, expected, ..
            } => (unknown_key(field, expected), Some(field.as_str())),
            YamlError::DuplicateMappingKey { key, .. } => {
                let key = key.as_deref().unwrap_or("?");
                (format!("duplicate key `{key}`"), Some(key))
            }
            YamlError::SerdeMissingField { field, .. } => {
                (format!("missing required key `{field}`"), None)
            }
            YamlError::SerdeInvalidType {
                unexpected,
                expected,
                ..
            }
            | YamlError::SerdeInvalidValue {
                unexpected,
                expected,
                ..
            } => (format!("expected {expected}, found {unexpected}"), None),
            YamlError::SerdeUnknownVariant {
                variant, expected, ..
            } => (
                format!(
                    "unknown value `{variant}`; expected one of: {}",
                    expected.join(", ")
                ),
                None,
            ),
            YamlError::Unexpected { expected, .. } => (expected_found(expected, text, at), None),
            YamlError::NullIntoString { .. } => ("value is empty".to_owned(), None),
            YamlError::Message { msg, .. } => (msg.clone(), None),
            // Anything else is about the text itself (syntax, more than one document): it has a
            // location but no field path.
            other => {
                let message = UserMessageFormatter.format_message(other);
                return Self::new(file, at, None, &message);
            }
        };
        let path = path.map(|p| field_path(p, keep_last));
        Self::new(file, at, path, &message)
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.file)?;
        if let (Some(line), Some(column)) = (self.line, self.column) {
            write!(f, ":{line}:{column}")?;
        }
        if let Some(path) = &self.path {
            write!(f, ": {path}")?;
        }
        write!(f, ": {}", self.message)
    }
}

/// The error that says what went wrong, under the wrappers that only add context.
fn innermost(err: &YamlError) -> &YamlError {
    match err.without_snippet() {
        YamlError::AliasError { error, .. } => innermost(error),
        other => other,
    }
}

/// Renders a serde_path_to_error path as `services[2].listen`.
///
/// `Spanned<T>` reads its value as a map key `value`, which shows up as a segment; those are
/// dropped, except a last segment that names the offending key itself (`keep_last`: an unknown
/// or duplicate key, which might be a literal `value:`). A key serde could not name (`?`) is
/// replaced by `keep_last`.
fn field_path(path: &Path, keep_last: Option<&str>) -> String {
    let segments: Vec<&Segment> = path.iter().collect();
    let mut out = String::new();
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        let key = match segment {
            Segment::Seq { index } => {
                out.push_str(&format!("[{index}]"));
                continue;
            }
            Segment::Map { key } if key == "value" && !(last && keep_last == Some("value")) => {
                continue;
            }
            Segment::Map { key } => key.as_str(),
            Segment::Enum { variant } => variant.as_str(),
            Segment::Unknown => match keep_last {
                Some(key) if last => key,
                _ => continue,
            },
        };
        if !out.is_empty() {
            out.push('.');
        }
        out.push_str(key);
    }
    out
}

/// `unknown key `endpoint` (did you mean `endpoints`?); allowed: name, authorities, ...`
fn unknown_key(key: &str, allowed: &[&str]) -> String {
    if allowed.contains(&"conditions") {
        let hint = match key {
            // `on` would be the natural name, but YAML 1.1 reads it as `true`.
            "on" => Some(
                " (YAML 1.1 parsers, Kubernetes' among them, read `on` as `true`: the key is `conditions`)",
            ),
            "retryOn" | "retry_on" | "retry-on" => Some(" (did you mean `conditions`?)"),
            _ => None,
        };
        if let Some(hint) = hint {
            return format!("unknown key `{key}`{hint}; allowed: {}", allowed.join(", "));
        }
    }
    let suggestion = allowed
        .iter()
        .map(|candidate| (distance(key, candidate), candidate))
        .filter(|(d, candidate)| {
            *d <= 2.min(candidate.len() / 3).max(1) || same_words(key, candidate)
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, candidate)| format!(" (did you mean `{candidate}`?)"))
        .unwrap_or_default();
    format!(
        "unknown key `{key}`{suggestion}; allowed: {}",
        allowed.join(", ")
    )
}

/// `max_connections`, `max-connections`, `MaxConnections` all mean `maxConnections`.
fn same_words(a: &str, b: &str) -> bool {
    let squash = |s: &str| -> String {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect()
    };
    squash(a) == squash(b)
}

/// Levenshtein distance over chars; keys are short.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (row[j + 1] + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// serde-saphyr says what it expected in parser terms (`mapping start`) and not what it found;
/// the found node is at the error's location in `text`, so look.
fn expected_found(expected: &str, text: &str, at: Option<Location>) -> String {
    let expected = match expected {
        "mapping start" => "a mapping (key: value)",
        "sequence start" => "a list",
        "string scalar" => "a single value",
        other => other,
    };
    let span = at.map(|l| l.span());
    let node = span
        .and_then(|s| s.byte_offset())
        .and_then(|offset| text.get(usize::try_from(offset).ok()?..))
        .map(|rest| rest.lines().next().unwrap_or("").trim_end());
    let Some(node) = node else {
        return format!("expected {expected}");
    };
    // The scalar alone, without a comment that may follow it on the line.
    let scalar_len = span
        .and_then(|s| s.byte_len())
        .and_then(|len| usize::try_from(len).ok())
        .filter(|len| *len > 0);
    let found = if node.starts_with('[') && node.contains("]:") {
        "a list (an IPv6 address must be quoted: \"[::1]:4143\")".to_owned()
    } else if node.starts_with('[') || node == "-" || node.starts_with("- ") {
        "a list".to_owned()
    } else if node.starts_with('{') || is_block_mapping(node) {
        "a mapping".to_owned()
    } else if node.is_empty() || node.starts_with('#') {
        "nothing".to_owned()
    } else {
        let scalar = scalar_len.and_then(|len| node.get(..len)).unwrap_or(node);
        let scalar: String = scalar.chars().take(40).collect();
        format!("`{scalar}`")
    };
    format!("expected {expected}, found {found}")
}

/// A line that starts a block mapping: `key: value` or `key:`, with an unquoted plain key.
fn is_block_mapping(line: &str) -> bool {
    let starts_quoted = line.starts_with('"') || line.starts_with('\'');
    !starts_quoted && (line.contains(": ") || line.ends_with(':'))
}

/// Control characters (a newline in a quoted key, a tab) would break the one-line promise.
fn one_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}
