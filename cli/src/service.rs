//! The systemd units, through `systemctl` and `journalctl` (their paths are configurable, so
//! tests put a recording stand-in in their place), and the drop-in that gives
//! deepstack.socket its address.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::env_file::{self, Readers};

/// The unit `deepstack` controls.
pub const UNIT: &str = "deepstack.service";

/// The socket unit that owns the port and passes it to [`UNIT`].
pub const SOCKET: &str = "deepstack.socket";

/// Where `deepstack start` writes the socket's address (PORT and BIND).
pub const SOCKET_DROPIN: &str = "/etc/systemd/system/deepstack.socket.d/listen.conf";
/// The service's drop-in that lets it reach a shared gallery over the network (GALLERY_URL).
pub const NETWORK_DROPIN: &str = "/etc/systemd/system/deepstack.service.d/gallery-network.conf";

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

    /// Enables the socket and the service at boot.
    pub fn enable(&self) -> Result<(), ServiceError> {
        self.run(&["enable", "--quiet", SOCKET, UNIT]).map(drop)
    }

    /// (Re)starts the service, a running instance replaced. When the socket's address
    /// changed (`socket_moved`), systemd rereads the drop-in and the socket restarts with the
    /// service, in one transaction; otherwise the socket stays up (started if it was not) and
    /// connections arriving during the restart wait in its queue.
    /// `units_changed`: another drop-in changed, systemd must reread the units first.
    pub fn restart(&self, socket_moved: bool, units_changed: bool) -> Result<(), ServiceError> {
        if socket_moved || units_changed {
            self.run(&["daemon-reload"])?;
        }
        if socket_moved {
            self.run(&["restart", SOCKET, UNIT])?;
        } else {
            self.run(&["start", SOCKET])?;
            self.run(&["restart", UNIT])?;
        }
        Ok(())
    }

    /// Stops the service and its socket, and keeps both from starting at boot.
    pub fn stop_and_disable(&self) -> Result<(), ServiceError> {
        self.run(&["stop", SOCKET, UNIT])?;
        self.run(&["disable", "--quiet", SOCKET, UNIT])?;
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

/// The drop-in that makes deepstack.socket listen on `addr` (and nowhere else).
pub fn socket_dropin(addr: SocketAddr) -> String {
    format!(
        "# Written by `deepstack start` from PORT and BIND in {}: do not edit,\n\
         # run `sudo deepstack start \"PORT=...\"` instead.\n\
         [Socket]\n\
         ListenStream=\n\
         ListenStream={addr}\n",
        env_file::DEFAULT_PATH
    )
}

/// Writes the socket's drop-in at `path` for `addr`, unless it already says exactly that;
/// whether it changed.
pub fn write_socket_dropin(path: &Path, addr: SocketAddr) -> io::Result<bool> {
    let text = socket_dropin(addr);
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(false);
    }
    env_file::write_atomic(path, &text, Readers::Everyone)?;
    Ok(true)
}

/// The service's drop-in for a gallery in PostgreSQL: the packaged unit has no network of its
/// own (`PrivateNetwork=yes`, only AF_UNIX), which a remote database needs.
pub fn network_dropin() -> String {
    format!(
        "# Written by `deepstack start` because GALLERY_URL is set in {}: the shared\n\
         # gallery is reached over the network. Removed when GALLERY_URL is unset.\n\
         [Service]\n\
         PrivateNetwork=no\n\
         RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6\n",
        env_file::DEFAULT_PATH
    )
}

/// Writes the network drop-in at `path` when `wanted`, removes it otherwise; whether
/// anything changed.
pub fn write_network_dropin(path: &Path, wanted: bool) -> io::Result<bool> {
    if !wanted {
        return match std::fs::remove_file(path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        };
    }
    let text = network_dropin();
    if std::fs::read_to_string(path).is_ok_and(|old| old == text) {
        return Ok(false);
    }
    env_file::write_atomic(path, &text, Readers::Everyone)?;
    Ok(true)
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
    fn the_network_dropin_follows_gallery_url() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deepstack.service.d/gallery-network.conf");
        assert!(
            !write_network_dropin(&path, false).unwrap(),
            "nothing to remove"
        );
        assert!(write_network_dropin(&path, true).unwrap(), "created");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("[Service]\nPrivateNetwork=no\n"), "{text}");
        assert!(text.contains("RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6"));
        assert!(!write_network_dropin(&path, true).unwrap(), "unchanged");
        assert!(write_network_dropin(&path, false).unwrap(), "removed");
        assert!(!path.exists());
    }

    #[test]
    fn the_socket_dropin_replaces_the_default_address() {
        let v4 = socket_dropin("0.0.0.0:8080".parse().unwrap());
        assert!(
            v4.contains("[Socket]\nListenStream=\nListenStream=0.0.0.0:8080\n"),
            "{v4}"
        );
        let v6 = socket_dropin("[::1]:80".parse().unwrap());
        assert!(v6.ends_with("ListenStream=[::1]:80\n"), "{v6}");

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deepstack.socket.d/listen.conf");
        let addr = "127.0.0.1:5000".parse().unwrap();
        assert!(write_socket_dropin(&path, addr).unwrap(), "created");
        assert!(!write_socket_dropin(&path, addr).unwrap(), "unchanged");
        assert!(write_socket_dropin(&path, "127.0.0.1:5001".parse().unwrap()).unwrap());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o644);
    }

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
