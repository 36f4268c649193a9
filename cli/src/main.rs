//! `deepstack`: the control command of the deepstackd service.
//!
//! Service control (`start "VISION-FACE=True"`, `stop`, `status`, ...) arrives with the
//! packaging work; until then this command only identifies itself, and says so.

use clap::Parser;

/// Control the deepstackd face recognition service.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The command (service control is not implemented yet).
    command: Vec<String>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    if cli.command.is_empty() {
        println!(
            "deepstack {}: run `deepstack --help`",
            env!("CARGO_PKG_VERSION")
        );
        return std::process::ExitCode::SUCCESS;
    }
    eprintln!(
        "deepstack: `{}` is not available yet: run deepstackd directly (see README.md)",
        cli.command.join(" ")
    );
    std::process::ExitCode::from(2)
}
