//! One function per command.

use std::io;
use std::net::IpAddr;
use std::os::unix::process::CommandExt;
use std::path::Path;

use crate::cli::{Cli, Commands};
use crate::env_file::{self, display_value};
use crate::error::{Error, Exit};
use crate::privileges::{effective_uid, env_file_readers, require_root};
use crate::service::{self, Systemctl};
use crate::settings::{self, is_arm, Settings, KEYS};
use crate::status;

/// Runs the command; prints what it did, and the error if it failed.
pub fn run(cli: Cli) -> Exit {
    match dispatch(&cli) {
        Ok(exit) => exit,
        Err(e) => {
            eprintln!("deepstack: error: {e}");
            e.exit()
        }
    }
}

fn dispatch(cli: &Cli) -> Result<Exit, Error> {
    let arch = cli
        .arch
        .clone()
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned());
    let uid = effective_uid(cli.euid);
    let systemctl = Systemctl::new(&cli.systemctl);
    match &cli.command {
        Commands::Start { settings } => start(cli, settings, &arch, uid, &systemctl),
        Commands::Stop => {
            require_root(uid, "stop")?;
            systemctl.stop_and_disable()?;
            println!("deepstack stopped; it stays off at boot until `deepstack start`");
            Ok(Exit::Ok)
        }
        Commands::Restart => {
            require_root(uid, "restart")?;
            let saved = load(&cli.env_file, &arch)?;
            restart(cli, &saved, &systemctl)?;
            println!("deepstack restarted: {}", url(&saved));
            Ok(Exit::Ok)
        }
        Commands::Status => Ok(status(cli, &arch, &systemctl)),
        Commands::Logs { no_follow, lines } => {
            let (program, args) = service::journal_command(&cli.journalctl, !no_follow, *lines);
            // exec: Ctrl-C and the exit status are journalctl's own.
            let err = std::process::Command::new(&program).args(&args).exec();
            Err(Error::Service(service::ServiceError::Spawn {
                program: program.display().to_string(),
                source: err,
            }))
        }
        Commands::Config => config(cli, &arch),
    }
}

fn start(
    cli: &Cli,
    args: &[String],
    arch: &str,
    uid: u32,
    systemctl: &Systemctl,
) -> Result<Exit, Error> {
    // Everything is checked before anything changes.
    let pairs = settings::split_pairs(args).map_err(Error::Invalid)?;
    let settings = Settings::validate(&pairs, arch)
        .map_err(Error::Invalid)?
        .with_service_defaults();
    let shown = if settings.iter().any(|(k, _)| k.is_secret()) {
        "start \"...\"".to_owned()
    } else {
        format!("start \"{}\"", pairs_text(&pairs))
    };
    require_root(uid, &shown)?;
    for warning in settings.warnings() {
        eprintln!("deepstack: warning: {warning}");
    }
    let readers = env_file_readers(&cli.group);
    env_file::write_atomic(&cli.env_file, &env_file::render(&settings), readers).map_err(
        |source| Error::Io {
            what: "cannot write",
            path: cli.env_file.clone(),
            source,
        },
    )?;
    println!("settings saved to {}", cli.env_file.display());
    systemctl.enable()?;
    restart(cli, &settings, systemctl)?;
    println!(
        "deepstack started: {} (`deepstack status`, `deepstack logs`)",
        url(&settings)
    );
    Ok(Exit::Ok)
}

/// Points deepstack.socket at the settings' address (its drop-in), gives the service the
/// network when its gallery is in PostgreSQL (another drop-in), then restarts the service:
/// with its socket if the address changed, on the socket kept open otherwise.
fn restart(cli: &Cli, settings: &Settings, systemctl: &Systemctl) -> Result<(), Error> {
    let bind = bind_of(settings).unwrap_or_else(|| {
        let default = settings::key("BIND").expect("a known key").daemon_default;
        default.parse().expect("BIND's default is an address")
    });
    let addr = std::net::SocketAddr::new(bind, port_of(settings));
    let moved =
        service::write_socket_dropin(&cli.socket_dropin, addr).map_err(|source| Error::Io {
            what: "cannot write",
            path: cli.socket_dropin.clone(),
            source,
        })?;
    let shared_gallery = settings
        .get("GALLERY_URL")
        .is_some_and(|url| !url.is_empty());
    let network_changed = service::write_network_dropin(&cli.network_dropin, shared_gallery)
        .map_err(|source| Error::Io {
            what: "cannot write",
            path: cli.network_dropin.clone(),
            source,
        })?;
    systemctl.restart(moved, network_changed)?;
    Ok(())
}

fn pairs_text(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The saved settings, checked as deepstackd will check them.
fn load(path: &Path, arch: &str) -> Result<Settings, Error> {
    let (settings, unknown) = read_file(path, arch)?;
    for name in unknown {
        eprintln!(
            "deepstack: warning: {}: unknown setting {name}, ignored by deepstackd",
            path.display()
        );
    }
    settings.map_err(|problems| Error::InvalidEnvFile {
        path: path.to_owned(),
        problems,
    })
}

type FileSettings = (Result<Settings, Vec<settings::Problem>>, Vec<String>);

fn read_file(path: &Path, arch: &str) -> Result<FileSettings, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => Error::NotConfigured(path.to_owned()),
        io::ErrorKind::PermissionDenied => Error::NeedsRoot(format!(
            "cannot read {}: it holds the keys and only root and the deepstack group may \
             read it: run it with sudo",
            path.display()
        )),
        _ => Error::Io {
            what: "cannot read",
            path: path.to_owned(),
            source,
        },
    })?;
    let entries = env_file::parse(&text).map_err(|e| Error::EnvFileSyntax {
        path: path.to_owned(),
        line: e.line,
    })?;
    let pairs: Vec<(String, String)> = entries.into_iter().map(|e| (e.key, e.value)).collect();
    Ok(Settings::validate_file(&pairs, arch))
}

fn port_of(settings: &Settings) -> u16 {
    settings
        .get("PORT")
        .and_then(|p| p.parse().ok())
        .unwrap_or(5000)
}

fn bind_of(settings: &Settings) -> Option<IpAddr> {
    settings.get("BIND").and_then(|b| b.parse().ok())
}

/// Where the API answers, for the messages after a start.
fn url(settings: &Settings) -> String {
    let addr = status::probe_address(bind_of(settings), port_of(settings));
    format!("port {}, http://{addr}/v1/vision/face", addr.port())
}

fn status(cli: &Cli, arch: &str, systemctl: &Systemctl) -> Exit {
    let settings = match read_file(&cli.env_file, arch) {
        Ok((Ok(s), _)) => Some(s),
        Ok((Err(problems), _)) => {
            let e = Error::InvalidEnvFile {
                path: cli.env_file.clone(),
                problems,
            };
            println!("settings: {e}");
            None
        }
        Err(e) => {
            println!("settings: {e}");
            None
        }
    };
    // Unreadable settings: try the port `deepstack start` uses.
    let settings = settings.unwrap_or_else(|| Settings::default().with_service_defaults());

    let active = match systemctl.show() {
        Ok(unit) => {
            println!("service:  {}", unit.summary());
            let text = unit.get("StatusText");
            if !text.is_empty() {
                println!("          {text}");
            }
            if !unit.is_active()
                && unit.get("Result") != "success"
                && !unit.get("Result").is_empty()
            {
                println!("          last result: {}", unit.get("Result"));
            }
            Some(unit.is_active())
        }
        Err(_) if !service::systemd_is_running() => {
            println!("service:  unknown: systemd is not running on this machine");
            None
        }
        Err(e) => {
            println!("service:  unknown ({e})");
            None
        }
    };

    let addr = status::probe_address(bind_of(&settings), port_of(&settings));
    let answered = match status::get(addr, "/v1/status", status::TIMEOUT) {
        Ok(r) => {
            println!(
                "API:      GET http://{addr}/v1/status -> HTTP {} in {} ms",
                r.code,
                r.elapsed.as_millis()
            );
            for (name, value) in status::describe(&r.body) {
                println!("  {name:<14} {value}");
            }
            r.code == 200
        }
        Err(e) => {
            println!("API:      GET http://{addr}/v1/status: no answer ({e})");
            false
        }
    };
    match (active, answered) {
        (_, true) => Exit::Ok,
        (Some(true), false) => Exit::NotAnswering,
        _ => Exit::NotRunning,
    }
}

fn config(cli: &Cli, arch: &str) -> Result<Exit, Error> {
    let (settings, unknown) = read_file(&cli.env_file, arch)?;
    println!("env file: {}", cli.env_file.display());
    let arm = is_arm(arch);
    let shown = settings.as_ref().ok();
    for key in KEYS {
        let (value, note) = match shown.and_then(|s| s.get(key.name)) {
            Some(v) => (display_value(key.is_secret(), v), ""),
            None if key.name == "MODE" && arm => {
                (settings::ARM_MODE.to_owned(), "  (fixed on ARM)")
            }
            None => (key.daemon_default.to_owned(), "  (default)"),
        };
        println!("  {:<18} {value}{note}", key.name);
    }
    for name in unknown {
        println!("  {name:<18} ignored: not a deepstackd setting");
    }
    match settings {
        Ok(_) => Ok(Exit::Ok),
        Err(problems) => Err(Error::InvalidEnvFile {
            path: cli.env_file.clone(),
            problems,
        }),
    }
}
