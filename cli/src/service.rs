//! The systemd unit, through `systemctl` and `journalctl` (their paths are configurable, so
//! tests put a recording stand-in in their place).

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The unit `deepstack` controls.
pub const UNIT: &str = "deepstack.service";

/// Properties `deepstack status` reads with `systemctl show`.
const STATUS_PROPERTIES: &str =
    "ActiveState,SubState,UnitFileState,MainPID,StatusText,ActiveEnterTimestamp,NRestarts,Result";

/// A `systemctl` or `journalctl` run that did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The program could not be run at all.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: io::Error,
    },
    /// It ran and failed.
    #[error("`{command}` failed ({status}){detail}")]
    Failed {
        /// The command line.
        command: String,
        /// Its exit status.
        status: String,
        /// What it printed on stderr, prefixed with ": ", if anything.
        detail: String,
    },
}

/// The `systemctl` to run.
#[derive(Debug, Clone)]
pub struct Systemctl {
    program: PathBuf,
}

impl Systemctl {
    /// `systemctl` found as `program` (a path, or a name looked up in PATH).
    pub fn new(program: impl Into<PathBuf>) -> Systemctl {
        Systemctl {
            program: program.into(),
        }
    }

    fn run(&self, args: &[&str]) -> Result<String, ServiceError> {
        let command_line = || {
            std::iter::once(self.program.display().to_string())
                .chain(args.iter().map(|a| a.to_string()))
                .collect::<Vec<_>>()
                .join(" ")
        };
        let out = Command::new(&self.program)
            .args(args)
            .output()
            .map_err(|source| ServiceError::Spawn {
                program: self.program.display().to_string(),
                source,
            })?;
        if out.status.success() {
            return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stderr = stderr.trim();
        Err(ServiceError::Failed {
            command: command_line(),
            status: out.status.to_string(),
            detail: if stderr.is_empty() {
                String::new()
            } else {
                format!(": {stderr}")
            },
        })
    }

    /// Enables the unit at boot and (re)starts it: a running instance is replaced.
    pub fn enable_and_restart(&self) -> Result<(), ServiceError> {
        self.run(&["enable", "--quiet", UNIT])?;
        self.run(&["restart", UNIT])?;
        Ok(())
    }

    /// Restarts the unit.
    pub fn restart(&self) -> Result<(), ServiceError> {
        self.run(&["restart", UNIT]).map(drop)
    }

    /// Stops the unit and keeps it from starting at boot.
    pub fn stop_and_disable(&self) -> Result<(), ServiceError> {
        self.run(&["stop", UNIT])?;
        self.run(&["disable", "--quiet", UNIT])?;
        Ok(())
    }

    /// The unit's state, as `systemctl show` reports it.
    pub fn show(&self) -> Result<UnitState, ServiceError> {
        let text = self.run(&["show", UNIT, "--property", STATUS_PROPERTIES])?;
        Ok(UnitState::parse(&text))
    }
}

/// What `systemctl show` says about the unit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnitState {
    properties: HashMap<String, String>,
}

impl UnitState {
    /// Parses `Name=value` lines.
    pub fn parse(text: &str) -> UnitState {
        let properties = text
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        UnitState { properties }
    }

    /// One property, empty when absent.
    pub fn get(&self, name: &str) -> &str {
        self.properties.get(name).map_or("", String::as_str)
    }

    /// Whether the service is running (or starting, or reloading).
    pub fn is_active(&self) -> bool {
        matches!(
            self.get("ActiveState"),
            "active" | "activating" | "reloading"
        )
    }

    /// One line, e.g. `active (running) since ..., enabled at boot`.
    pub fn summary(&self) -> String {
        if self.get("ActiveState").is_empty() {
            return "unknown (systemctl show reported no state)".to_owned();
        }
        let mut out = format!("{} ({})", self.get("ActiveState"), self.get("SubState"));
        let since = self.get("ActiveEnterTimestamp");
        if self.is_active() && !since.is_empty() {
            out.push_str(&format!(" since {since}"));
        }
        match self.get("UnitFileState") {
            "enabled" => out.push_str(", enabled at boot"),
            "" => {}
            other => out.push_str(&format!(", {other} at boot")),
        }
        out
    }
}

/// Whether systemd manages this machine (not so in most containers and chroots).
pub fn systemd_is_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// The `journalctl` command line that follows (or prints) the service's log.
pub fn journal_command(
    journalctl: &Path,
    follow: bool,
    lines: Option<u32>,
) -> (PathBuf, Vec<OsString>) {
    let mut args: Vec<OsString> = vec!["--unit".into(), UNIT.into()];
    if follow {
        args.push("--follow".into());
    }
    if let Some(n) = lines {
        args.push("--lines".into());
        args.push(n.to_string().into());
    }
    (journalctl.to_owned(), args)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_state_summary() {
        let s = UnitState::parse(
            "ActiveState=active\nSubState=running\nUnitFileState=enabled\nActiveEnterTimestamp=Mon 2024-01-01\nStatusText=ready\n",
        );
        assert!(s.is_active());
        assert_eq!(
            s.summary(),
            "active (running) since Mon 2024-01-01, enabled at boot"
        );
        let s = UnitState::parse("ActiveState=inactive\nSubState=dead\nUnitFileState=disabled\n");
        assert!(!s.is_active());
        assert_eq!(s.summary(), "inactive (dead), disabled at boot");
    }
}
