//! The config loader (`herd_config::parse`, what `--config`, `--check` and every reload run) on
//! arbitrary text.
//!
//! Properties, on any text:
//! - parsing never panics (a reload must never take the proxy down);
//! - a refusal is one line that starts with the file name, and the line and column it points
//!   at are inside the text;
//! - an accepted file, printed back as YAML (what `GET /config` shows and an operator may paste
//!   into a file), parses to the same configuration.
#![no_main]

use libfuzzer_sys::fuzz_target;

const FILE: &str = "fuzz.yaml";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match herd_config::parse(text, FILE) {
        Ok(config) => {
            let printed = serde_saphyr::to_string(&config).expect("a configuration prints");
            match herd_config::parse(&printed, FILE) {
                Ok(again) => assert_eq!(again, config, "printed back as:\n{printed}"),
                Err(error) => panic!("printed back as:\n{printed}\nwhich is refused: {error}"),
            }
        }
        Err(error) => {
            let message = error.to_string();
            assert!(message.starts_with(FILE), "{message}");
            assert!(!message.contains('\n'), "not one line: {message:?}");
            let lines = yaml_lines(text);
            if let Some(line) = error.line() {
                // A line past the last line break is where an unterminated document ends.
                let count = lines.len() as u64 + 1;
                assert!(
                    (1..=count).contains(&line),
                    "line {line} of {count}: {message}"
                );
            }
            if let Some(column) = error.column() {
                let widest = lines.iter().map(|l| l.chars().count()).max().unwrap_or(0) as u64;
                assert!(
                    (1..=widest + 1).contains(&column),
                    "column {column}, widest line {widest}: {message}"
                );
            }
        }
    }
});

/// The lines of `text` as YAML counts them: a line break is CR LF, LF or a CR alone (YAML 1.2
/// §5.4), where `str::lines` knows only the first two.
fn yaml_lines(text: &str) -> Vec<&str> {
    let mut lines = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(['\r', '\n']) {
        lines.push(&rest[..at]);
        let step = if rest[at..].starts_with("\r\n") { 2 } else { 1 };
        rest = &rest[at + step..];
    }
    if !rest.is_empty() {
        lines.push(rest);
    }
    lines
}
