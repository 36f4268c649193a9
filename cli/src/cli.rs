//! The command line: commands, help text with examples, and the hidden overrides that let
//! the tests run everything without root or systemd.

use std::path::PathBuf;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::env_file;
use crate::settings::{ARM_MODE, ARM_MODE_REFUSAL, KEYS};

/// Control the deepstackd face recognition service (DeepStack's face API).
#[derive(Debug, Parser)]
#[command(name = "deepstack", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Commands,
    /// The env file (tests and unusual set-ups; the service reads /etc/deepstack/deepstack.env).
    #[arg(long, global = true, hide = true, env = "DEEPSTACK_ENV_FILE", default_value = env_file::DEFAULT_PATH)]
    pub env_file: PathBuf,
    /// The drop-in giving deepstack.socket its address.
    #[arg(long, global = true, hide = true, env = "DEEPSTACK_SOCKET_DROPIN", default_value = crate::service::SOCKET_DROPIN)]
    pub socket_dropin: PathBuf,
    /// The service's drop-in that gives it the network when GALLERY_URL is set.
    #[arg(long, global = true, hide = true, env = "DEEPSTACK_NETWORK_DROPIN", default_value = crate::service::NETWORK_DROPIN)]
    pub network_dropin: PathBuf,
    /// The systemctl to run.
    #[arg(
        long,
        global = true,
        hide = true,
        env = "DEEPSTACK_SYSTEMCTL",
        default_value = "systemctl"
    )]
    pub systemctl: PathBuf,
    /// The journalctl to run.
    #[arg(
        long,
        global = true,
        hide = true,
        env = "DEEPSTACK_JOURNALCTL",
        default_value = "journalctl"
    )]
    pub journalctl: PathBuf,
    /// The architecture to act as (std::env::consts::ARCH names: x86_64, aarch64, arm).
    #[arg(long, global = true, hide = true, env = "DEEPSTACK_ARCH")]
    pub arch: Option<String>,
    /// The effective user id to act as (the root check).
    #[arg(long, global = true, hide = true, env = "DEEPSTACK_EUID")]
    pub euid: Option<u32>,
    /// The group that may read the env file.
    #[arg(long, global = true, hide = true, env = "DEEPSTACK_GROUP", default_value = crate::privileges::SERVICE_GROUP)]
    pub group: String,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Commands {
    /// Check the settings, save them and (re)start the service (needs root)
    ///
    /// Takes DeepStack's one quoted argument of space-separated KEY=VALUE pairs, or the pairs as
    /// separate arguments. Every setting and value is checked before anything changes. The
    /// settings replace the saved ones; a running service is restarted with them and the
    /// service is enabled at boot. PORT is 80 unless given.
    Start {
        /// Settings, e.g. "VISION-FACE=True PORT=8080 API-KEY=mysecretkey"
        #[arg(required = true, value_name = "KEY=VALUE", allow_hyphen_values = true)]
        settings: Vec<String>,
    },
    /// Stop the service and keep it from starting at boot (needs root)
    Stop,
    /// Restart the service with the saved settings, after checking them (needs root)
    Restart,
    /// Show the service's state and what its GET /v1/status answers
    Status,
    /// Follow the service's log (journalctl)
    Logs {
        /// Print the log and return instead of following it
        #[arg(long)]
        no_follow: bool,
        /// How many lines of the past to show
        #[arg(short = 'n', long, value_name = "N")]
        lines: Option<u32>,
    },
    /// Show the effective settings, keys masked (root, or the deepstack group, reads them)
    Config,
}

const EXAMPLES: &str = "\
Examples:
  sudo deepstack start \"VISION-FACE=True\"
  sudo deepstack start \"VISION-FACE=True PORT=8080 API-KEY=mysecretkey\"
  sudo deepstack start VISION-FACE=True THREADCOUNT=2    (separate arguments work too)
  deepstack status
  deepstack logs
  sudo deepstack config
  sudo deepstack stop";

const EXIT_CODES: &str = "\
Exit codes:
  0  done (status: running and answering)
  1  an operation failed (writing the env file, systemctl, journalctl)
  2  bad command line
  3  a setting or value was refused: nothing was changed
  4  needs root: run it with sudo
  5  status: the service is not running
  6  status: the service runs but GET /v1/status does not answer";

/// The list of settings for the help texts.
fn settings_help() -> String {
    let mut out = String::from("Settings (KEY=VALUE):\n");
    for k in KEYS {
        let names = std::iter::once(k.name)
            .chain(k.aliases.iter().copied())
            .collect::<Vec<_>>()
            .join(", ");
        out.push_str(&format!("  {names:<26} {}\n", k.help));
    }
    out.push_str(&format!(
        "On ARM (Raspberry Pi): \"{ARM_MODE_REFUSAL}\": MODE is refused and deepstackd runs \
         one fixed setting ({ARM_MODE}).\n"
    ));
    out
}

/// The command with its generated help sections.
pub fn command() -> clap::Command {
    let settings = settings_help();
    Cli::command()
        .about("Control the deepstackd face recognition service (DeepStack's face API)")
        .after_help(format!(
            "{EXAMPLES}\n\n{EXIT_CODES}\n\n`deepstack start --help` lists the settings."
        ))
        .mut_subcommand("start", |c| {
            c.after_help(format!("{settings}\n{EXAMPLES}\n\n{EXIT_CODES}"))
        })
}

/// Parses the process's arguments; prints help or a usage error and exits (code 2) as clap
/// does.
pub fn parse() -> Cli {
    let matches = command().get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}
