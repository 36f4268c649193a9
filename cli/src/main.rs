//! `deepstack`: the control command of the deepstackd service (see the library's docs).

fn main() -> std::process::ExitCode {
    deepstack_cli::commands::run(deepstack_cli::cli::parse()).into()
}
