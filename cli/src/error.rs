//! Every way a command fails, and the exit code each one gives: decided here, in one match.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::service::ServiceError;
use crate::settings::Problem;

/// The exit codes, as `deepstack --help` documents them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Exit {
    /// Done; for `status`: running and answering.
    Ok = 0,
    /// An operation failed: the env file could not be written or read, systemctl or
    /// journalctl failed.
    Failed = 1,
    /// A bad command line (clap's own code).
    Usage = 2,
    /// A setting or value was refused; nothing was changed.
    InvalidConfig = 3,
    /// The command needs root.
    NeedsRoot = 4,
    /// `status`: the service is not running.
    NotRunning = 5,
    /// `status`: the service runs but `/v1/status` does not answer.
    NotAnswering = 6,
}

impl From<Exit> for ExitCode {
    fn from(e: Exit) -> ExitCode {
        ExitCode::from(e as u8)
    }
}

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Settings that `start` refuses, all of them.
    #[error("{}", problems_text(.0))]
    Invalid(Vec<Problem>),
    /// The env file has a line that is not `KEY=VALUE`.
    #[error("{path}:{line}: expected KEY=VALUE, a # comment or an empty line")]
    EnvFileSyntax {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// The env file holds settings the service would refuse.
    #[error("{}: {}\nfix them with `deepstack start \"...\"`", .path.display(), problems_text(.problems))]
    InvalidEnvFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problems: Vec<Problem>,
    },
    /// No env file yet.
    #[error("{} does not exist: configure the service first, e.g. `sudo deepstack start \"VISION-FACE=True\"`", .0.display())]
    NotConfigured(PathBuf),
    /// Not root.
    #[error("{0}")]
    NeedsRoot(String),
    /// A file operation.
    #[error("{what} {}: {source}", .path.display())]
    Io {
        /// What was being done ("cannot write", ...).
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// systemctl or journalctl.
    #[error("{0}{hint}", hint = systemd_hint())]
    Service(#[from] ServiceError),
}

impl Error {
    /// The exit code for this failure.
    pub fn exit(&self) -> Exit {
        match self {
            Error::Invalid(_) | Error::InvalidEnvFile { .. } | Error::EnvFileSyntax { .. } => {
                Exit::InvalidConfig
            }
            Error::NeedsRoot(_) => Exit::NeedsRoot,
            Error::NotConfigured(_) | Error::Io { .. } | Error::Service(_) => Exit::Failed,
        }
    }
}

fn problems_text(problems: &[Problem]) -> String {
    match problems {
        [one] => one.to_string(),
        many => {
            let lines: Vec<String> = many.iter().map(|p| format!("  - {p}")).collect();
            format!("{} problems:\n{}", many.len(), lines.join("\n"))
        }
    }
}

fn systemd_hint() -> &'static str {
    if crate::service::systemd_is_running() {
        ""
    } else {
        "\nsystemd is not running on this machine (a container or a chroot?): run deepstackd \
         yourself, e.g. `deepstackd --env-file /etc/deepstack/deepstack.env`"
    }
}
