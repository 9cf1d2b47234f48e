//! Finding and running iptables: which variant, which binaries, and what their failures say.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::rules::{Family, Rules, line_at};

/// Which of the kernel's two rule sets the rules go into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// The one already in use in the namespace, else the plain `iptables`'s variant.
    Auto,
    /// nf_tables (`iptables-nft`).
    Nft,
    /// The legacy `ip_tables` (`iptables-legacy`).
    Legacy,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Auto => "auto",
            Backend::Nft => "nft",
            Backend::Legacy => "legacy",
        })
    }
}

/// Why the rules could not be installed. Each is one line for the init container's log.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("no {tool} on PATH for the {backend} backend (nor a plain {plain} of that variant)")]
    Missing {
        tool: String,
        plain: String,
        backend: Backend,
    },
    #[error("no iptables on PATH (looked for iptables-nft, iptables-legacy and iptables)")]
    NoIptables,
    #[error("cannot run {command}: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("{command} ({family}) failed at line {line} `{text}`: {stderr}")]
    Rule {
        command: String,
        family: Family,
        line: usize,
        text: String,
        stderr: String,
    },
    #[error("{command} ({family}) failed: {stderr}")]
    Failed {
        command: String,
        family: Family,
        stderr: String,
    },
}

/// The binaries of one family and backend.
pub struct Tools {
    family: Family,
    /// `iptables-legacy` and the like: checks for the jumps.
    main: PathBuf,
    restore: PathBuf,
}

impl Tools {
    /// The `iptables-VARIANT` binaries of `family`, or the plain ones when they are that variant.
    pub fn find(backend: Backend, family: Family) -> Result<Tools, InitError> {
        let prefix = match family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        };
        let variant = match backend {
            Backend::Nft => "nft",
            Backend::Legacy => "legacy",
            Backend::Auto => unreachable!("resolved before the tools are found"),
        };
        let named = |suffix: &str| which(&format!("{prefix}-{variant}{suffix}"));
        if let (Some(main), Some(restore)) = (named(""), named("-restore")) {
            return Ok(Tools {
                family,
                main,
                restore,
            });
        }
        if let (Some(main), Some(restore)) = (which(prefix), which(&format!("{prefix}-restore")))
            && plain_variant(&main) == Some(backend)
        {
            return Ok(Tools {
                family,
                main,
                restore,
            });
        }
        Err(InitError::Missing {
            tool: format!("{prefix}-{variant}-restore"),
            plain: format!("{prefix}-restore"),
            backend,
        })
    }

    /// How the restore binary is named in messages (`iptables-legacy-restore`).
    pub fn restore_name(&self) -> String {
        name(&self.restore)
    }

    /// Which of `rules`' jumps are not in place yet (indices into [`Rules::jumps`]), by
    /// `iptables -t nat -C`: any answer but "present" counts as absent, and the restore that
    /// follows reports what is really wrong.
    pub fn missing_jumps(&self, rules: &Rules) -> Result<Vec<usize>, InitError> {
        let mut missing = Vec::new();
        for (i, jump) in rules.jumps.iter().enumerate() {
            let status = Command::new(&self.main)
                .args(["-t", "nat", "-C"])
                .args(jump)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .map_err(|source| InitError::Spawn {
                    command: name(&self.main),
                    source,
                })?;
            if !status.success() {
                missing.push(i);
            }
        }
        Ok(missing)
    }

    /// Feeds `input` to `iptables-restore --noflush`: the whole table or nothing.
    pub fn restore(&self, input: &str) -> Result<(), InitError> {
        let command = format!("{} --noflush", name(&self.restore));
        let spawn_error = |source| InitError::Spawn {
            command: command.clone(),
            source,
        };
        let mut child = Command::new(&self.restore)
            .arg("--noflush")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(spawn_error)?;
        // A restore that dies early closes its stdin: its exit status says why, not this write.
        if let Some(mut stdin) = child.stdin.take() {
            let _ = stdin.write_all(input.as_bytes());
        }
        let output = child.wait_with_output().map_err(spawn_error)?;
        if output.status.success() {
            return Ok(());
        }
        let stderr = one_line(&String::from_utf8_lossy(&output.stderr), &output.status);
        Err(match failing_line(&stderr) {
            Some(line) => InitError::Rule {
                command,
                family: self.family,
                line,
                text: line_at(input, line).unwrap_or("?").to_owned(),
                stderr,
            },
            None => InitError::Failed {
                command,
                family: self.family,
                stderr,
            },
        })
    }
}

/// `Auto` made concrete (see the module doc of [`super`]); the others as they are.
pub fn resolve(backend: Backend) -> Result<Backend, InitError> {
    if backend != Backend::Auto {
        return Ok(backend);
    }
    let nft = rules_in(Backend::Nft);
    let legacy = rules_in(Backend::Legacy);
    if nft != legacy {
        return Ok(if nft > legacy {
            Backend::Nft
        } else {
            Backend::Legacy
        });
    }
    if let Some(plain) = which("iptables")
        && let Some(variant) = plain_variant(&plain)
    {
        return Ok(variant);
    }
    if which("iptables-nft-restore").is_some() {
        return Ok(Backend::Nft);
    }
    if which("iptables-legacy-restore").is_some() {
        return Ok(Backend::Legacy);
    }
    Err(InitError::NoIptables)
}

/// How many rules (`-A` lines, both families) `iptables-VARIANT-save` shows; 0 when it is not
/// installed or fails (a kernel without that rule set).
fn rules_in(backend: Backend) -> usize {
    ["iptables", "ip6tables"]
        .iter()
        .filter_map(|prefix| which(&format!("{prefix}-{backend}-save")))
        .filter_map(|save| {
            Command::new(save)
                .args(["-t", "nat"])
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .output()
                .ok()
                .filter(|o| o.status.success())
        })
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.starts_with("-A "))
                .count()
        })
        .sum()
}

/// The variant a plain `iptables` (or `ip6tables`) is: `iptables v1.8.9 (nf_tables)` or
/// `(legacy)`; before 1.8 there was only legacy, and no variant in the version line.
fn plain_variant(binary: &Path) -> Option<Backend> {
    let output = Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let version = String::from_utf8_lossy(&output.stdout);
    if version.contains("nf_tables") {
        Some(Backend::Nft)
    } else if version.contains("iptables v") {
        Some(Backend::Legacy)
    } else {
        None
    }
}

/// The line of its input iptables-restore says failed: `line 7 failed` (legacy), `line 7:
/// RULE_APPEND failed` (nft), `Error occurred at line: 7` (a bad argument).
pub fn failing_line(stderr: &str) -> Option<usize> {
    let mut rest = stderr;
    while let Some(at) = rest.find("line") {
        rest = &rest[at + "line".len()..];
        let digits = rest.trim_start_matches([':', ' ']);
        let end = digits
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(digits.len());
        if let Ok(line) = digits[..end].parse::<usize>()
            && line > 0
        {
            return Some(line);
        }
    }
    None
}

/// A command's stderr as one line (without iptables' "Try `iptables-restore -h'" hint), or its
/// exit status when it said nothing.
fn one_line(stderr: &str, status: &std::process::ExitStatus) -> String {
    let text = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("Try `"))
        .collect::<Vec<_>>()
        .join("; ");
    if text.is_empty() {
        format!("exited with {status}, saying nothing")
    } else {
        text
    }
}

/// `name` on `PATH`, when it is an executable file there.
fn which(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

fn name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}
