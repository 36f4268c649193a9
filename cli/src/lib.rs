//! The `deepstack` command: configures and controls the deepstackd systemd service the way
//! DeepStack's Raspberry Pi CLI did (`sudo deepstack start "VISION-FACE=True"`).
//!
//! `main` only parses the command line and calls [`commands::run`]. For tests, hidden flags
//! (or variables) replace what needs root or systemd: `--env-file` (DEEPSTACK_ENV_FILE),
//! `--socket-dropin` (DEEPSTACK_SOCKET_DROPIN), `--systemctl` (DEEPSTACK_SYSTEMCTL),
//! `--journalctl` (DEEPSTACK_JOURNALCTL), `--arch` (DEEPSTACK_ARCH), `--euid` (DEEPSTACK_EUID)
//! and `--group` (DEEPSTACK_GROUP).

pub mod cli;
pub mod commands;
pub mod env_file;
pub mod error;
pub mod privileges;
pub mod service;
pub mod settings;
pub mod status;
