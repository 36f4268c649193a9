//! The effective configuration, decided in one place: defaults < env file (`--env-file`) <
//! environment < command-line flags.
//!
//! Names are DeepStack's (`VISION-FACE`, `MODE`, `API-KEY`, ...) with their underscore
//! aliases. Names with '-' cannot be exported by most shells, but systemd's EnvironmentFile,
//! `env` and docker's `-e` set them, so the environment is read as a whole. An empty value
//! means "not set". Any invalid value stops the start-up with a message naming the variable.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::gallery::postgres::GalleryUrl;
use crate::gallery::RecentBounds;
use crate::vision::decode::DEFAULT_MAX_PIXELS;
use crate::vision::Mode;

/// Default HTTP port (DeepStack's server).
pub const DEFAULT_PORT: u16 = 5000;
/// Default request deadline in seconds (DeepStack's).
pub const DEFAULT_TIMEOUT_SECS: f64 = 60.0;
/// TIMEOUT must be below this (about 31 years): "never" without overflowing deadline sums.
pub const MAX_TIMEOUT_SECS: f64 = 1e9;
/// Default gallery directory (DeepStack's, inside its docker image).
pub const DEFAULT_DATA_DIR: &str = "/datastore";
/// Default cap on one request's uploaded bytes: 50 MiB.
pub const DEFAULT_MAX_UPLOAD_BYTES: u64 = 50 << 20;
/// Default cap on file parts in one request: DeepStack's clients send one or a few photos.
pub const DEFAULT_MAX_FILES: usize = 32;
/// Default cap on one text field (`userid`, `api_key`, ...): 64 KiB.
pub const DEFAULT_MAX_FIELD_BYTES: usize = 64 << 10;
/// Default cap on a registered userid, in bytes of UTF-8.
pub const DEFAULT_MAX_USERID_BYTES: usize = 256;
/// Default cap on requests queued for the inference threads; past it, requests are answered
/// at once with the timeout error instead of waiting (see `inference`).
pub const DEFAULT_MAX_QUEUE: usize = 64;
/// Default lowest face quality (0..1, `vision::quality`) a registration sample may have:
/// refuses faces under about 30 pixels, strongly blurred ones and profiles.
pub const DEFAULT_MIN_FACE_QUALITY: f32 = 0.3;
/// Recent faces are kept this many hours (0: not kept at all).
pub const DEFAULT_RECENT_FACES_HOURS: u64 = 72;
/// At most this many recent faces (about 5 KB each with their crop).
pub const DEFAULT_RECENT_FACES_MAX: usize = 2_000;
/// Longest retention RECENT_FACES_HOURS takes: ten years.
const MAX_RECENT_FACES_HOURS: u64 = 24 * 3653;
/// Default deadline for a request body to arrive, in seconds: a photo from a camera on the
/// LAN takes well under a second; a stalled upload is cut after this.
pub const DEFAULT_BODY_TIMEOUT_SECS: f64 = 30.0;
/// Default cap on open HTTP connections (more wait in the listen backlog).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Largest THREADCOUNT accepted: more threads than this only add memory and contention.
pub const MAX_THREADCOUNT: usize = 256;
/// The detector size used on ARM, where DeepStack had no speed modes: the Pi's budget.
pub const ARM_MODE: Mode = Mode::Low;

/// Whether this build runs where DeepStack documented "no speed modes" (the Raspberry Pi).
const ON_ARM: bool = cfg!(any(target_arch = "arm", target_arch = "aarch64"));

/// One setting: its DeepStack name, aliases, flag and help line.
struct Setting {
    name: &'static str,
    aliases: &'static [&'static str],
    flag: &'static str,
    /// `None` for a switch (a flag without a value).
    value: Option<&'static str>,
    help: &'static str,
}

const SETTINGS: &[Setting] = &[
    Setting {
        name: "VISION-FACE",
        aliases: &["VISION_FACE"],
        flag: "--vision-face",
        value: None,
        help: "enable the face endpoints (the variable must be exactly `True`)",
    },
    Setting {
        name: "MODE",
        aliases: &[],
        flag: "--mode",
        value: Some("High|Medium|Low"),
        help: "detector speed mode [default: Medium; not available on ARM]",
    },
    Setting {
        name: "API-KEY",
        aliases: &["API_KEY"],
        flag: "--api-key",
        value: Some("KEY"),
        help:
            "required `api_key` form field on /v1/vision/* (prefer the env file: flags show in ps)",
    },
    Setting {
        name: "ADMIN-KEY",
        aliases: &["ADMIN_KEY"],
        flag: "--admin-key",
        value: Some("KEY"),
        help: "required `admin_key` form field on /v1/backup and /v1/restore",
    },
    Setting {
        name: "PORT",
        aliases: &[],
        flag: "--port",
        value: Some("N"),
        help: "HTTP port [default: 5000]",
    },
    Setting {
        name: "BIND",
        aliases: &[],
        flag: "--bind",
        value: Some("ADDR"),
        help: "address to listen on [default: 0.0.0.0]",
    },
    Setting {
        name: "THREADCOUNT",
        aliases: &[],
        flag: "--threadcount",
        value: Some("N"),
        help: "inference threads; a request alone also uses the idle ones' cores (its detector, its faces) [default: number of cores]",
    },
    Setting {
        name: "TIMEOUT",
        aliases: &[],
        flag: "--timeout",
        value: Some("SECONDS"),
        help: "deadline of one request's inference [default: 60]",
    },
    Setting {
        name: "DATA_DIR",
        aliases: &[],
        flag: "--data-dir",
        value: Some("DIR"),
        help: "where the gallery lives [default: $STATE_DIRECTORY under systemd, else /datastore]",
    },
    Setting {
        name: "GALLERY_URL",
        aliases: &[],
        flag: "--gallery-url",
        value: Some("URL"),
        help: "postgresql://user@host:port/db: a gallery shared by several daemons (password in the URL or PGPASSFILE) [default: SQLite in DATA_DIR]",
    },
    Setting {
        name: "MODELS_DIR",
        aliases: &[],
        flag: "--models-dir",
        value: Some("DIR"),
        help: "directory whose model files replace the embedded ones",
    },
    Setting {
        name: "MAX_UPLOAD_BYTES",
        aliases: &[],
        flag: "--max-upload-bytes",
        value: Some("N"),
        help: "largest upload per request [default: 52428800]",
    },
    Setting {
        name: "MAX_PIXELS",
        aliases: &[],
        flag: "--max-pixels",
        value: Some("N"),
        help: "largest image, width x height [default: 50000000]",
    },
    Setting {
        name: "MAX_FILES",
        aliases: &[],
        flag: "--max-files",
        value: Some("N"),
        help: "most file parts in one request [default: 32]",
    },
    Setting {
        name: "MAX_FIELD_BYTES",
        aliases: &[],
        flag: "--max-field-bytes",
        value: Some("N"),
        help: "largest text field (userid, api_key, ...) [default: 65536]",
    },
    Setting {
        name: "MAX_USERID_BYTES",
        aliases: &[],
        flag: "--max-userid-bytes",
        value: Some("N"),
        help: "longest userid a registration accepts, in bytes [default: 256]",
    },
    Setting {
        name: "MAX_QUEUE",
        aliases: &[],
        flag: "--max-queue",
        value: Some("N"),
        help: "most requests waiting for the inference threads; more are refused [default: 64]",
    },
    Setting {
        name: "MEMORY_BUDGET_BYTES",
        aliases: &[],
        flag: "--memory-budget-bytes",
        value: Some("N"),
        help: "memory that request bodies and decoding images may hold at once; past it requests are refused [default: an eighth of the machine's memory, 32-128 MiB]",
    },
    Setting {
        name: "BODY_TIMEOUT",
        aliases: &[],
        flag: "--body-timeout",
        value: Some("SECONDS"),
        help: "deadline for a request body to arrive; slower uploads are cut [default: 30]",
    },
    Setting {
        name: "MAX_CONNECTIONS",
        aliases: &[],
        flag: "--max-connections",
        value: Some("N"),
        help: "most open HTTP connections; more wait in the listen backlog [default: 1024]",
    },
    Setting {
        name: "MIN_FACE_QUALITY",
        aliases: &[],
        flag: "--min-face-quality",
        value: Some("0..1"),
        help: "lowest face quality (size, sharpness, detection, pose) registration stores; 0 stores all [default: 0.3]",
    },
    Setting {
        name: "RECENT_FACES_HOURS",
        aliases: &[],
        flag: "--recent-faces-hours",
        value: Some("N"),
        help: "hours the faces recognize saw are kept (crop, embedding, answer, camera); 0 keeps none [default: 72]",
    },
    Setting {
        name: "RECENT_FACES_MAX",
        aliases: &[],
        flag: "--recent-faces-max",
        value: Some("N"),
        help: "most recent faces kept, the newest [default: 2000]",
    },
];

/// The daemon's settings.
#[derive(Clone)]
pub struct Config {
    /// Face endpoints enabled (`VISION-FACE=True`).
    pub vision_face: bool,
    /// Detector speed mode.
    pub mode: Mode,
    /// Required `api_key` on the face routes, if any.
    pub api_key: Option<String>,
    /// Required `admin_key` on backup and restore, if any.
    pub admin_key: Option<String>,
    /// Address to listen on.
    pub bind: IpAddr,
    /// HTTP port.
    pub port: u16,
    /// Inference threads.
    pub threadcount: usize,
    /// Deadline of one request's inference.
    pub timeout: Duration,
    /// Gallery directory.
    pub data_dir: PathBuf,
    /// The shared PostgreSQL gallery, checked; `None`: SQLite in `data_dir`. May hold a
    /// password: never log it (`Debug` shows it without).
    pub gallery_url: Option<String>,
    /// Directory overriding the embedded models.
    pub models_dir: Option<PathBuf>,
    /// Largest upload per request, in bytes.
    pub max_upload_bytes: u64,
    /// Largest image, in pixels.
    pub max_pixels: u64,
    /// Most file parts in one request.
    pub max_files: usize,
    /// Largest text field, in bytes.
    pub max_field_bytes: usize,
    /// Longest userid a registration accepts, in bytes.
    pub max_userid_bytes: usize,
    /// Most requests waiting for an inference thread.
    pub max_queue: usize,
    /// Lowest face quality a registration sample may have.
    pub min_face_quality: f32,
    /// How long and how many recent faces are kept; `None`: not kept (RECENT_FACES_HOURS=0).
    pub recent_faces: Option<RecentBounds>,
    /// Memory request bodies and decoding images may hold at once, in bytes.
    pub memory_budget_bytes: u64,
    /// Deadline for a request body to arrive.
    pub body_timeout: Duration,
    /// Most open HTTP connections.
    pub max_connections: usize,
    /// Things worth a warning in the log once it is set up (unknown env file keys, ...).
    pub warnings: Vec<String>,
}

// Keys never reach a log or a panic message.
impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |k: &Option<String>| if k.is_some() { "<set>" } else { "<unset>" };
        f.debug_struct("Config")
            .field("vision_face", &self.vision_face)
            .field("mode", &self.mode)
            .field("api_key", &set(&self.api_key))
            .field("admin_key", &set(&self.admin_key))
            .field("bind", &self.bind)
            .field("port", &self.port)
            .field("threadcount", &self.threadcount)
            .field("timeout", &self.timeout)
            .field("data_dir", &self.data_dir)
            .field(
                "gallery_url",
                &self.gallery_url.as_deref().map(|url| {
                    GalleryUrl::parse(url, None)
                        .map_or("<set>".to_owned(), |u| u.shown().to_owned())
                }),
            )
            .field("models_dir", &self.models_dir)
            .field("max_upload_bytes", &self.max_upload_bytes)
            .field("max_pixels", &self.max_pixels)
            .field("max_files", &self.max_files)
            .field("max_field_bytes", &self.max_field_bytes)
            .field("max_userid_bytes", &self.max_userid_bytes)
            .field("max_queue", &self.max_queue)
            .field("min_face_quality", &self.min_face_quality)
            .field("recent_faces", &self.recent_faces)
            .field("memory_budget_bytes", &self.memory_budget_bytes)
            .field("body_timeout", &self.body_timeout)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Command {
    /// Run the server with this configuration.
    Run(Box<Config>),
    /// Print [`help`] and exit.
    Help,
    /// Print the version and exit.
    Version,
}

/// Where a value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A line of the env file.
    EnvFile {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// The process environment, under this spelling.
    Environment(String),
    /// A command-line flag.
    Flag(&'static str),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::EnvFile { path, line } => write!(f, "{}:{line}", path.display()),
            Origin::Environment(name) => write!(f, "environment variable {name}"),
            Origin::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A value that does not parse or is out of range.
    #[error("{name}: {problem} (got {value:?} from {origin})")]
    Invalid {
        /// The setting's DeepStack name.
        name: &'static str,
        /// The offending value.
        value: String,
        /// Where it was set.
        origin: Origin,
        /// What is wrong with it.
        problem: String,
    },
    /// Two spellings of one setting disagree in the same source.
    #[error("{first} and {second} are both set, to different values: keep one")]
    Conflict {
        /// One spelling.
        first: String,
        /// The other.
        second: String,
    },
    /// The env file cannot be read.
    #[error("cannot read env file {path}: {source}")]
    EnvFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A line of the env file is not `KEY=VALUE`.
    #[error("{path}:{line}: expected KEY=VALUE, a # comment or an empty line")]
    EnvFileSyntax {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// A bad command line.
    #[error("{0} (see --help)")]
    Usage(String),
}

/// Raw values by setting name; later sources overwrite earlier ones.
type Raw = HashMap<&'static str, (String, Origin)>;

/// The DeepStack names of every setting, in help order (the CLI's list must match it).
pub fn setting_names() -> impl Iterator<Item = &'static str> {
    SETTINGS.iter().map(|s| s.name)
}

/// Every environment variable the daemon reads: each setting under all its spellings, and
/// systemd's. A program that starts `deepstackd` (the tests, the bench) clears them so the
/// caller's own environment cannot change the run.
pub fn environment_variables() -> impl Iterator<Item = &'static str> {
    SETTINGS
        .iter()
        .flat_map(|s| std::iter::once(s.name).chain(s.aliases.iter().copied()))
        .chain(crate::service::SYSTEMD_VARIABLES.iter().copied())
}

fn setting_for_key(key: &str) -> Option<&'static Setting> {
    SETTINGS
        .iter()
        .find(|s| s.name == key || s.aliases.contains(&key))
}

fn setting_for_flag(flag: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.flag == flag)
}

/// Reads the process's arguments and environment (the entry point of `main`).
pub fn from_process() -> Result<Command, ConfigError> {
    from_sources(
        std::env::args().skip(1),
        std::env::vars_os().filter_map(utf8_pair),
    )
}

fn utf8_pair((k, v): (std::ffi::OsString, std::ffi::OsString)) -> Option<(String, String)> {
    Some((k.into_string().ok()?, v.into_string().ok()?))
}

/// The configuration from explicit arguments (without the program name) and environment.
pub fn from_sources(
    args: impl IntoIterator<Item = String>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Command, ConfigError> {
    let mut warnings = Vec::new();
    let flags = match parse_args(args)? {
        Args::Help => return Ok(Command::Help),
        Args::Version => return Ok(Command::Version),
        Args::Run { env_file, flags } => {
            let mut raw = Raw::new();
            if let Some(path) = env_file {
                let text =
                    std::fs::read_to_string(&path).map_err(|source| ConfigError::EnvFile {
                        path: path.clone(),
                        source,
                    })?;
                merge(&mut raw, parse_env_file(&text, &path, &mut warnings)?)?;
            }
            let env: Vec<(String, String)> = env.into_iter().collect();
            let from_env = env
                .iter()
                .cloned()
                .filter_map(|(k, v)| {
                    let setting = setting_for_key(&k)?;
                    Some((setting.name, v, Origin::Environment(k)))
                })
                .collect();
            merge(&mut raw, from_env)?;
            merge(&mut raw, flags)?;
            // Under systemd's StateDirectory=, the gallery goes where the unit says unless
            // DATA_DIR is set (the first directory if the unit lists several).
            let state_dir = env.iter().find(|(k, _)| k == "STATE_DIRECTORY");
            if let Some((k, v)) = state_dir {
                let first = v.split(':').next().unwrap_or_default();
                let unset = raw.get("DATA_DIR").is_none_or(|(v, _)| v.is_empty());
                if unset && !first.is_empty() {
                    let origin = Origin::Environment(k.clone());
                    raw.insert("DATA_DIR", (first.to_owned(), origin));
                }
            }
            raw
        }
    };
    let config = build(&flags, warnings)?;
    Ok(Command::Run(Box::new(config)))
}

enum Args {
    Help,
    Version,
    Run {
        env_file: Option<PathBuf>,
        flags: Vec<(&'static str, String, Origin)>,
    },
}

fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Args, ConfigError> {
    let mut env_file = None;
    let mut flags = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_owned(), Some(v.to_owned())),
            _ => (arg.clone(), None),
        };
        let mut value = |flag: &str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or_else(|| ConfigError::Usage(format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Args::Help),
            "-V" | "--version" => return Ok(Args::Version),
            "--env-file" => env_file = Some(PathBuf::from(value("--env-file")?)),
            _ => {
                let setting = setting_for_flag(&flag)
                    .ok_or_else(|| ConfigError::Usage(format!("unknown argument {arg:?}")))?;
                let v = match setting.value {
                    Some(_) => value(setting.flag)?,
                    // A switch: `--vision-face` means True; `--vision-face=X` sets X as is.
                    None => inline.clone().unwrap_or_else(|| "True".to_owned()),
                };
                flags.push((setting.name, v, Origin::Flag(setting.flag)));
            }
        }
    }
    Ok(Args::Run { env_file, flags })
}

/// `KEY=VALUE` lines (surrounding quotes stripped), `#` comments and blank lines.
fn parse_env_file(
    text: &str,
    path: &Path,
    warnings: &mut Vec<String>,
) -> Result<Vec<(&'static str, String, Origin)>, ConfigError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let origin = Origin::EnvFile {
            path: path.to_owned(),
            line: i + 1,
        };
        let Some((key, value)) = line.split_once('=') else {
            return Err(ConfigError::EnvFileSyntax {
                path: path.to_owned(),
                line: i + 1,
            });
        };
        let key = key.trim();
        match setting_for_key(key) {
            Some(setting) => out.push((setting.name, unquote(value.trim()).to_owned(), origin)),
            None => warnings.push(format!("{origin}: unknown setting {key}, ignored")),
        }
    }
    Ok(out)
}

fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return &v[1..v.len() - 1];
        }
    }
    v
}

/// Adds one source's values; two spellings of one setting must agree within a source.
fn merge(raw: &mut Raw, source: Vec<(&'static str, String, Origin)>) -> Result<(), ConfigError> {
    let mut seen: HashMap<&'static str, (String, Origin)> = HashMap::new();
    for (name, value, origin) in source {
        if let Some((earlier, first)) = seen.get(name) {
            let same_kind = matches!(
                (first, &origin),
                (Origin::Environment(_), Origin::Environment(_))
            );
            if same_kind && *earlier != value {
                return Err(ConfigError::Conflict {
                    first: first.to_string(),
                    second: origin.to_string(),
                });
            }
        }
        seen.insert(name, (value, origin));
    }
    raw.extend(seen);
    Ok(())
}

fn build(raw: &Raw, warnings: Vec<String>) -> Result<Config, ConfigError> {
    // A set value, or None when unset or empty.
    let get = |name: &'static str| raw.get(name).filter(|(v, _)| !v.is_empty());
    let invalid = |name: &'static str, problem: &str| {
        let (value, origin) = raw[name].clone();
        ConfigError::Invalid {
            name,
            value,
            origin,
            problem: problem.to_owned(),
        }
    };
    let number = |name: &'static str, min: u64, max: u64| -> Result<Option<u64>, ConfigError> {
        match get(name) {
            None => Ok(None),
            Some((v, _)) => match v.parse::<u64>() {
                Ok(n) if (min..=max).contains(&n) => Ok(Some(n)),
                _ => Err(invalid(
                    name,
                    &format!("expected a whole number from {min} to {max}"),
                )),
            },
        }
    };
    let mut warnings = warnings;

    // DeepStack enables faces only for exactly "True"; anything else is "off", not an error.
    let vision_face = match get("VISION-FACE") {
        Some((v, _)) if v == "True" => true,
        Some((v, origin)) => {
            warnings.push(format!(
                "{origin} is {v:?}, not exactly \"True\": the face endpoints stay off"
            ));
            false
        }
        None => false,
    };
    let mode = match get("MODE") {
        None if ON_ARM => ARM_MODE,
        None => Mode::Medium,
        Some(_) if ON_ARM => {
            return Err(invalid(
                "MODE",
                "Speed Modes are not available on the Raspberry PI Version (ARM runs the fixed Low setting); remove MODE",
            ))
        }
        Some((v, _)) => {
            Mode::parse(v).ok_or_else(|| invalid("MODE", "expected High, Medium or Low"))?
        }
    };
    let key = |name: &'static str| get(name).map(|(v, _)| v.clone());
    let bind = match get("BIND") {
        None => IpAddr::from([0, 0, 0, 0]),
        Some((v, _)) => v
            .parse()
            .map_err(|_| invalid("BIND", "expected an IP address"))?,
    };
    let port = number("PORT", 1, u64::from(u16::MAX))?.map_or(DEFAULT_PORT, |p| p as u16);
    let threadcount = match number("THREADCOUNT", 1, MAX_THREADCOUNT as u64)? {
        Some(n) => n as usize,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let seconds = |name: &'static str, default: f64| match get(name) {
        None => Ok(Duration::from_secs_f64(default)),
        // Fractions are ours (DeepStack took whole seconds): they make the timeouts testable.
        Some((v, _)) => v
            .parse::<f64>()
            .ok()
            .filter(|s| *s > 0.0 && *s < MAX_TIMEOUT_SECS)
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
            .ok_or_else(|| invalid(name, "expected a positive number of seconds")),
    };
    let timeout = seconds("TIMEOUT", DEFAULT_TIMEOUT_SECS)?;
    let body_timeout = seconds("BODY_TIMEOUT", DEFAULT_BODY_TIMEOUT_SECS)?;
    let data_dir =
        get("DATA_DIR").map_or_else(|| PathBuf::from(DEFAULT_DATA_DIR), |(v, _)| v.into());
    let gallery_url = match get("GALLERY_URL") {
        None => None,
        Some((v, _)) if v.is_empty() => None,
        Some((v, origin)) => match GalleryUrl::parse(v, None) {
            Ok(_) => Some(v.clone()),
            // The value may hold a password: the message never repeats it.
            Err(problem) => {
                return Err(ConfigError::Invalid {
                    name: "GALLERY_URL",
                    value: "<the URL>".into(),
                    origin: origin.clone(),
                    problem,
                })
            }
        },
    };
    let models_dir = match get("MODELS_DIR") {
        None => None,
        Some((v, _)) if Path::new(v).is_dir() => Some(PathBuf::from(v)),
        Some(_) => return Err(invalid("MODELS_DIR", "not a directory")),
    };
    let max_upload_bytes =
        number("MAX_UPLOAD_BYTES", 1, u64::MAX / 4)?.unwrap_or(DEFAULT_MAX_UPLOAD_BYTES);
    let max_pixels = number("MAX_PIXELS", 1, u64::from(u32::MAX))?.unwrap_or(DEFAULT_MAX_PIXELS);
    let max_files = number("MAX_FILES", 1, 100_000)?.map_or(DEFAULT_MAX_FILES, |n| n as usize);
    let max_field_bytes =
        number("MAX_FIELD_BYTES", 64, 16 << 20)?.map_or(DEFAULT_MAX_FIELD_BYTES, |n| n as usize);
    let max_userid_bytes =
        number("MAX_USERID_BYTES", 1, 16 << 20)?.map_or(DEFAULT_MAX_USERID_BYTES, |n| n as usize);
    let max_queue = number("MAX_QUEUE", 1, 1_000_000)?.map_or(DEFAULT_MAX_QUEUE, |n| n as usize);
    let memory_budget_bytes = number("MEMORY_BUDGET_BYTES", 1 << 20, u64::MAX / 4)?
        .unwrap_or_else(crate::budget::default_budget_bytes);
    let max_connections =
        number("MAX_CONNECTIONS", 1, 1_000_000)?.map_or(DEFAULT_MAX_CONNECTIONS, |n| n as usize);
    let min_face_quality = match get("MIN_FACE_QUALITY") {
        None => DEFAULT_MIN_FACE_QUALITY,
        Some((v, _)) => v
            .parse::<f32>()
            .ok()
            .filter(|q| (0.0..=1.0).contains(q))
            .ok_or_else(|| invalid("MIN_FACE_QUALITY", "expected a number from 0 to 1"))?,
    };
    let recent_hours = number("RECENT_FACES_HOURS", 0, MAX_RECENT_FACES_HOURS)?
        .unwrap_or(DEFAULT_RECENT_FACES_HOURS);
    let recent_max =
        number("RECENT_FACES_MAX", 1, 1_000_000)?.map_or(DEFAULT_RECENT_FACES_MAX, |n| n as usize);
    let recent_faces = (recent_hours > 0).then(|| RecentBounds {
        keep_for: Duration::from_secs(recent_hours * 3600),
        max_faces: recent_max,
    });
    // A key longer than a text field may be could never be sent. The message shows its
    // length, never the key.
    for name in ["API-KEY", "ADMIN-KEY"] {
        if let Some((k, origin)) = get(name).filter(|(k, _)| k.len() > max_field_bytes) {
            return Err(ConfigError::Invalid {
                name,
                value: format!("<a key of {} bytes>", k.len()),
                origin: origin.clone(),
                problem: format!(
                    "longer than MAX_FIELD_BYTES ({max_field_bytes}): no request could carry it"
                ),
            });
        }
    }
    Ok(Config {
        vision_face,
        mode,
        api_key: key("API-KEY"),
        admin_key: key("ADMIN-KEY"),
        bind,
        port,
        threadcount,
        timeout,
        data_dir,
        gallery_url,
        models_dir,
        max_upload_bytes,
        max_pixels,
        max_files,
        max_field_bytes,
        max_userid_bytes,
        max_queue,
        min_face_quality,
        recent_faces,
        memory_budget_bytes,
        body_timeout,
        max_connections,
        warnings,
    })
}

/// The `--help` text.
pub fn help() -> String {
    let mut out = format!(
        "deepstackd {}: a face recognition server speaking DeepStack's face API\n\n\
         Usage: deepstackd [--env-file PATH] [FLAGS]\n\n\
         Every setting comes, from lowest to highest priority, from its default, the env\n\
         file (KEY=VALUE lines, # comments), the environment, then the flag.\n\n\
         Options:\n  {:<32} read settings from this file\n",
        env!("CARGO_PKG_VERSION"),
        "--env-file PATH",
    );
    for s in SETTINGS {
        let flag = match s.value {
            Some(v) => format!("{} {v}", s.flag),
            None => s.flag.to_owned(),
        };
        let names = std::iter::once(s.name)
            .chain(s.aliases.iter().copied())
            .collect::<Vec<_>>()
            .join(", ");
        out.push_str(&format!("  {flag:<32} {} [env: {names}]\n", s.help));
    }
    out.push_str("  -h, --help                       print this help\n");
    out.push_str("  -V, --version                    print the version\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let args = args.iter().map(|s| s.to_string());
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        match from_sources(args, env)? {
            Command::Run(config) => Ok(*config),
            other => panic!("expected Run, got {other:?}"),
        }
    }

    fn problem_of(result: Result<Config, ConfigError>) -> String {
        result.expect_err("expected an error").to_string()
    }

    #[test]
    fn systemd_state_directory_is_the_default_data_dir_only() {
        let state = [("STATE_DIRECTORY", "/var/lib/deepstack:/var/lib/other")];
        assert_eq!(
            run(&[], &state).unwrap().data_dir,
            PathBuf::from("/var/lib/deepstack")
        );
        let both = [state[0], ("DATA_DIR", "/srv/gallery")];
        assert_eq!(
            run(&[], &both).unwrap().data_dir,
            PathBuf::from("/srv/gallery")
        );
        assert_eq!(
            run(&["--data-dir=/tmp/g"], &state).unwrap().data_dir,
            PathBuf::from("/tmp/g")
        );
        assert_eq!(
            run(&[], &[("STATE_DIRECTORY", "")]).unwrap().data_dir,
            PathBuf::from(DEFAULT_DATA_DIR)
        );
    }

    #[test]
    fn defaults_are_deepstacks() {
        let c = run(&[], &[("HOME", "/root")]).unwrap();
        assert!(!c.vision_face);
        assert_eq!(c.port, 5000);
        assert_eq!(c.timeout, Duration::from_secs(60));
        assert_eq!(c.data_dir, PathBuf::from("/datastore"));
        assert_eq!(c.api_key, None);
        assert_eq!(c.admin_key, None);
        assert_eq!(c.bind, IpAddr::from([0, 0, 0, 0]));
        assert!(c.threadcount >= 1);
        assert_eq!(c.max_upload_bytes, 50 << 20);
        assert_eq!(c.max_pixels, DEFAULT_MAX_PIXELS);
        assert_eq!(
            (
                c.max_files,
                c.max_field_bytes,
                c.max_userid_bytes,
                c.max_queue
            ),
            (32, 65536, 256, 64)
        );
        assert_eq!(c.min_face_quality, DEFAULT_MIN_FACE_QUALITY);
        assert_eq!(c.memory_budget_bytes, crate::budget::default_budget_bytes());
        assert_eq!(c.body_timeout, Duration::from_secs(30));
        assert_eq!(c.max_connections, 1024);
        if !ON_ARM {
            assert_eq!(c.mode, Mode::Medium);
        }
    }

    #[test]
    fn memory_and_connection_limits_are_set_by_name_or_flag() {
        let c = run(
            &["--max-connections", "10"],
            &[("MEMORY_BUDGET_BYTES", "16777216"), ("BODY_TIMEOUT", "2.5")],
        )
        .unwrap();
        assert_eq!(
            (c.memory_budget_bytes, c.body_timeout, c.max_connections),
            (16 << 20, Duration::from_millis(2500), 10)
        );
        for (name, value) in [
            ("MEMORY_BUDGET_BYTES", "1000"),
            ("BODY_TIMEOUT", "0"),
            ("MAX_CONNECTIONS", "0"),
        ] {
            let e = run(&[], &[(name, value)]).unwrap_err().to_string();
            assert!(e.contains(name), "{name}={value}: {e}");
        }
    }

    #[test]
    fn deepstack_names_and_aliases() {
        let c = run(
            &[],
            &[
                ("VISION-FACE", "True"),
                ("API_KEY", "k1"),
                ("ADMIN-KEY", "k2"),
                ("THREADCOUNT", "3"),
                ("TIMEOUT", "0.5"),
            ],
        )
        .unwrap();
        assert!(c.vision_face);
        assert_eq!(c.api_key.as_deref(), Some("k1"));
        assert_eq!(c.admin_key.as_deref(), Some("k2"));
        assert_eq!(c.threadcount, 3);
        assert_eq!(c.timeout, Duration::from_millis(500));
        assert!(run(&[], &[("VISION_FACE", "True")]).unwrap().vision_face);
    }

    #[test]
    fn vision_face_must_be_exactly_true() {
        for v in ["true", "TRUE", "1", "yes", ""] {
            let c = run(&[], &[("VISION-FACE", v)]).unwrap();
            assert!(!c.vision_face, "{v:?}");
        }
        let c = run(&[], &[("VISION-FACE", "true")]).unwrap();
        assert!(c.warnings[0].contains("not exactly"), "{:?}", c.warnings);
    }

    #[test]
    fn flags_beat_environment_beats_env_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("deepstack.env");
        std::fs::write(
            &file,
            "# written by the CLI\n\nPORT=7000\nAPI-KEY=\"from file\"\nTHREADCOUNT=2\nADMIN-KEY=a\nOTHER=1\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let c = run(&["--env-file", path], &[]).unwrap();
        assert_eq!(c.port, 7000);
        assert_eq!(c.api_key.as_deref(), Some("from file"));
        assert!(c.warnings.iter().any(|w| w.contains("OTHER")));

        let c = run(
            &["--env-file", path],
            &[("PORT", "7001"), ("API_KEY", "env")],
        )
        .unwrap();
        assert_eq!((c.port, c.api_key.as_deref()), (7001, Some("env")));
        assert_eq!(c.threadcount, 2);

        let c = run(
            &[
                &format!("--env-file={path}"),
                "--port=7002",
                "--api-key",
                "flag",
            ],
            &[("PORT", "7001")],
        )
        .unwrap();
        assert_eq!((c.port, c.api_key.as_deref()), (7002, Some("flag")));
        assert_eq!(c.admin_key.as_deref(), Some("a"));
    }

    #[test]
    fn flags_cover_every_setting() {
        let dir = tempfile::tempdir().unwrap();
        let models = dir.path().to_str().unwrap();
        let mut args = vec![
            "--vision-face",
            "--api-key=a",
            "--admin-key=b",
            "--port=1",
            "--bind=127.0.0.1",
            "--threadcount=4",
            "--timeout=2",
            "--data-dir=/tmp/x",
            "--max-upload-bytes=10",
            "--max-pixels=20",
            "--max-files=3",
            "--max-field-bytes=1000",
            "--max-userid-bytes=10",
            "--max-queue=5",
            "--min-face-quality=0.5",
        ];
        let models_flag = format!("--models-dir={models}");
        args.push(&models_flag);
        if !ON_ARM {
            args.push("--mode=High");
        }
        let c = run(&args, &[]).unwrap();
        assert!(c.vision_face);
        assert_eq!(c.bind, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(
            (c.port, c.threadcount, c.max_upload_bytes, c.max_pixels),
            (1, 4, 10, 20)
        );
        assert_eq!(
            (
                c.max_files,
                c.max_field_bytes,
                c.max_userid_bytes,
                c.max_queue
            ),
            (3, 1000, 10, 5)
        );
        assert_eq!(c.timeout, Duration::from_secs(2));
        assert_eq!(c.min_face_quality, 0.5);
        assert_eq!(c.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(c.models_dir.as_deref(), Some(dir.path()));
        if !ON_ARM {
            assert_eq!(c.mode, Mode::High);
        }
    }

    #[test]
    fn invalid_values_name_their_variable() {
        let cases: &[(&str, &str, &str)] = &[
            ("PORT", "0", "PORT"),
            ("PORT", "70000", "PORT"),
            ("PORT", "http", "PORT"),
            ("THREADCOUNT", "0", "THREADCOUNT"),
            ("THREADCOUNT", "-1", "THREADCOUNT"),
            ("TIMEOUT", "0", "TIMEOUT"),
            ("TIMEOUT", "soon", "TIMEOUT"),
            ("TIMEOUT", "NaN", "TIMEOUT"),
            ("TIMEOUT", "1e300", "TIMEOUT"),
            ("MODE", "Turbo", "MODE"),
            ("BIND", "localhost:80", "BIND"),
            ("MAX_UPLOAD_BYTES", "1MB", "MAX_UPLOAD_BYTES"),
            ("MAX_PIXELS", "0", "MAX_PIXELS"),
            ("MAX_FILES", "0", "MAX_FILES"),
            ("MAX_FIELD_BYTES", "10", "MAX_FIELD_BYTES"),
            ("MAX_USERID_BYTES", "0", "MAX_USERID_BYTES"),
            ("MAX_QUEUE", "none", "MAX_QUEUE"),
            ("MIN_FACE_QUALITY", "1.5", "MIN_FACE_QUALITY"),
            ("MIN_FACE_QUALITY", "NaN", "MIN_FACE_QUALITY"),
            ("API-KEY", &"k".repeat(70_000), "API-KEY"),
            ("MODELS_DIR", "/nonexistent/models", "MODELS_DIR"),
        ];
        for (key, value, named) in cases {
            let msg = problem_of(run(&[], &[(key, value)]));
            assert!(msg.starts_with(named), "{key}={value}: {msg}");
            assert!(
                !key.contains("KEY") || !msg.contains(value),
                "a key in: {msg}"
            );
            assert!(msg.contains("environment variable"), "{msg}");
        }
        let msg = problem_of(run(&["--port", "x"], &[]));
        assert!(msg.starts_with("PORT") && msg.contains("--port"), "{msg}");
    }

    #[test]
    fn empty_means_unset() {
        let c = run(&[], &[("PORT", ""), ("API-KEY", ""), ("MODE", "")]).unwrap();
        assert_eq!(c.port, 5000);
        assert_eq!(c.api_key, None);
    }

    #[test]
    fn conflicting_aliases_are_refused() {
        let msg = problem_of(run(&[], &[("API-KEY", "a"), ("API_KEY", "b")]));
        assert!(msg.contains("API-KEY") && msg.contains("API_KEY"), "{msg}");
        assert!(run(&[], &[("API-KEY", "a"), ("API_KEY", "a")]).is_ok());
    }

    #[test]
    fn bad_command_lines_and_env_files() {
        assert!(matches!(
            run(&["--frobnicate"], &[]),
            Err(ConfigError::Usage(_))
        ));
        assert!(matches!(run(&["--port"], &[]), Err(ConfigError::Usage(_))));
        assert!(matches!(
            run(&["--env-file", "/nonexistent/deepstack.env"], &[]),
            Err(ConfigError::EnvFile { .. })
        ));
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.env");
        std::fs::write(&file, "PORT=1\nnot a setting\n").unwrap();
        let msg = problem_of(run(&["--env-file", file.to_str().unwrap()], &[]));
        assert!(msg.contains(":2:"), "{msg}");
        assert!(matches!(
            from_sources(["--help".to_owned()], []),
            Ok(Command::Help)
        ));
        assert!(matches!(
            from_sources(["-V".to_owned()], []),
            Ok(Command::Version)
        ));
    }

    #[test]
    fn mode_on_arm_is_refused() {
        let result = run(&[], &[("MODE", "High")]);
        if ON_ARM {
            assert!(problem_of(result).contains("not available on ARM"));
        } else {
            assert_eq!(result.unwrap().mode, Mode::High);
        }
    }

    #[test]
    fn keys_stay_out_of_debug_output() {
        let c = run(&[], &[("API-KEY", "s3cret"), ("ADMIN-KEY", "t0p")]).unwrap();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("t0p"),
            "{shown}"
        );
    }

    #[test]
    fn help_lists_every_setting() {
        let text = help();
        for s in SETTINGS {
            assert!(text.contains(s.flag) && text.contains(s.name), "{}", s.name);
        }
    }
}
