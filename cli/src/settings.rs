//! The settings `deepstack start` accepts: their names, how each value is checked, and the
//! parsing of DeepStack's `"KEY=VALUE KEY=VALUE"` argument.
//!
//! The names and ranges mirror `deepstackd`'s own configuration (daemon/src/config.rs); the
//! CLI checks them again so that a bad value is refused before the service is touched, instead
//! of leaving a service that fails at start-up.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;

/// Port `deepstack start` serves on when `PORT` is not given (DeepStack's Pi CLI: 80).
pub const CLI_DEFAULT_PORT: &str = "80";
/// Gallery directory when `DATA_DIR` is not given: the unit's StateDirectory, the only place
/// the sandboxed service may write.
pub const SERVICE_DATA_DIR: &str = "/var/lib/deepstack";
/// The detector setting deepstackd runs on ARM, where DeepStack had no speed modes.
/// Keep in step with the daemon's choice for ARM.
pub const ARM_MODE: &str = "Low";
/// DeepStack's own words, from its Raspberry Pi documentation.
pub const ARM_MODE_REFUSAL: &str = "Speed Modes are not available on the Raspberry PI Version";

/// How a value is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `True` or `False` (DeepStack enables faces only for exactly `True`).
    Switch,
    /// `High`, `Medium` or `Low`.
    Mode,
    /// Any text on one line; empty means "no key".
    Secret,
    /// A whole number in a range.
    Number { min: u64, max: u64 },
    /// A positive number of seconds.
    Seconds,
    /// A number from 0 to 1.
    Fraction,
    /// An IP address.
    Address,
    /// An absolute path; `must_exist` for directories that are read, not created.
    Dir { must_exist: bool },
    /// A `postgresql://user@host/db` URL, which may hold a password; empty means unset.
    PostgresUrl,
}

/// One setting of the env file.
#[derive(Debug, PartialEq, Eq)]
pub struct Key {
    /// DeepStack's name, the one written to the env file.
    pub name: &'static str,
    /// Other spellings accepted on input (shells cannot export names with '-').
    pub aliases: &'static [&'static str],
    kind: Kind,
    /// One line for `deepstack --help`.
    pub help: &'static str,
    /// What deepstackd uses when the env file does not set it.
    pub daemon_default: &'static str,
}

impl Key {
    /// Whether the value is a key that must never be shown.
    pub fn is_secret(&self) -> bool {
        matches!(self.kind, Kind::Secret | Kind::PostgresUrl)
    }
}

/// Every setting, in the order they are written and shown.
pub const KEYS: &[Key] = &[
    Key {
        name: "VISION-FACE",
        aliases: &["VISION_FACE"],
        kind: Kind::Switch,
        help: "True enables the face API (it is off otherwise, as on DeepStack)",
        daemon_default: "off (the face API answers 403)",
    },
    Key {
        name: "MODE",
        aliases: &[],
        kind: Kind::Mode,
        help: "High, Medium or Low: detector speed against small faces (not on ARM)",
        daemon_default: "Medium",
    },
    Key {
        name: "API-KEY",
        aliases: &["API_KEY"],
        kind: Kind::Secret,
        help: "the api_key every /v1/vision/* request must carry",
        daemon_default: "none: no key required",
    },
    Key {
        name: "ADMIN-KEY",
        aliases: &["ADMIN_KEY"],
        kind: Kind::Secret,
        help: "the admin_key /v1/backup and /v1/restore must carry",
        daemon_default: "none: no key required",
    },
    Key {
        name: "PORT",
        aliases: &[],
        kind: Kind::Number { min: 1, max: 65535 },
        help: "HTTP port (deepstack start: 80)",
        daemon_default: "5000",
    },
    Key {
        name: "BIND",
        aliases: &[],
        kind: Kind::Address,
        help: "address to listen on (all: 0.0.0.0)",
        daemon_default: "0.0.0.0",
    },
    Key {
        name: "THREADCOUNT",
        aliases: &[],
        kind: Kind::Number { min: 1, max: 256 },
        help: "inference threads (one per core)",
        daemon_default: "one per core",
    },
    Key {
        name: "TIMEOUT",
        aliases: &[],
        kind: Kind::Seconds,
        help: "seconds before a request fails with a timeout (60)",
        daemon_default: "60",
    },
    Key {
        name: "DATA_DIR",
        aliases: &[],
        kind: Kind::Dir { must_exist: false },
        help: "where the gallery lives (deepstack start: /var/lib/deepstack)",
        daemon_default: "/datastore",
    },
    Key {
        name: "GALLERY_URL",
        aliases: &[],
        kind: Kind::PostgresUrl,
        help: "postgresql://user@host:port/db: one gallery shared by several boards (password in it or in PGPASSFILE)",
        daemon_default: "none: SQLite in DATA_DIR",
    },
    Key {
        name: "MODELS_DIR",
        aliases: &[],
        kind: Kind::Dir { must_exist: true },
        help: "directory whose model files replace the embedded ones",
        daemon_default: "none: the embedded models",
    },
    Key {
        name: "MAX_UPLOAD_BYTES",
        aliases: &[],
        kind: Kind::Number {
            min: 1,
            max: u64::MAX / 4,
        },
        help: "largest upload of one request (52428800)",
        daemon_default: "52428800",
    },
    Key {
        name: "MAX_PIXELS",
        aliases: &[],
        kind: Kind::Number {
            min: 1,
            max: u32::MAX as u64,
        },
        help: "largest image, width x height (50000000)",
        daemon_default: "50000000",
    },
    Key {
        name: "MAX_FILES",
        aliases: &[],
        kind: Kind::Number {
            min: 1,
            max: 100_000,
        },
        help: "most file parts in one request (32)",
        daemon_default: "32",
    },
    Key {
        name: "MAX_FIELD_BYTES",
        aliases: &[],
        kind: Kind::Number {
            min: 64,
            max: 16 << 20,
        },
        help: "largest text field: userid, api_key, ... (65536)",
        daemon_default: "65536",
    },
    Key {
        name: "MAX_USERID_BYTES",
        aliases: &[],
        kind: Kind::Number {
            min: 1,
            max: 16 << 20,
        },
        help: "longest userid a registration accepts, in bytes (256)",
        daemon_default: "256",
    },
    Key {
        name: "MAX_QUEUE",
        aliases: &[],
        kind: Kind::Number {
            min: 1,
            max: 1_000_000,
        },
        help: "most requests waiting for inference; more are refused at once (64)",
        daemon_default: "64",
    },
    Key {
        name: "MEMORY_BUDGET_BYTES",
        aliases: &[],
        kind: Kind::Number {
            min: 1 << 20,
            max: u64::MAX / 4,
        },
        help: "memory request bodies and decoding images may hold at once (1/8 of RAM, 32-128 MiB)",
        daemon_default: "1/8 of RAM, 32-128 MiB",
    },
    Key {
        name: "BODY_TIMEOUT",
        aliases: &[],
        kind: Kind::Seconds,
        help: "seconds a request body may take to arrive; stalled uploads are cut (30)",
        daemon_default: "30",
    },
    Key {
        name: "MAX_CONNECTIONS",
        aliases: &[],
        kind: Kind::Number {
            min: 1,
            max: 1_000_000,
        },
        help: "most open HTTP connections; more wait in the backlog (1024)",
        daemon_default: "1024",
    },
    Key {
        name: "MIN_FACE_QUALITY",
        aliases: &[],
        kind: Kind::Fraction,
        help: "0 to 1: lowest face quality a registration stores; 0 stores every face (0.3)",
        daemon_default: "0.3",
    },
    Key {
        name: "RECENT_FACES_HOURS",
        aliases: &[],
        kind: Kind::Number {
            min: 0,
            max: 24 * 3653,
        },
        help: "hours the faces recognize saw are kept (biometric data, SECURITY.md); 0 keeps none (72)",
        daemon_default: "72",
    },
    Key {
        name: "RECENT_FACES_MAX",
        aliases: &[],
        kind: Kind::Number {
            min: 1,
            max: 1_000_000,
        },
        help: "most recent faces kept, the newest (2000)",
        daemon_default: "2000",
    },
];

/// DeepStack settings for APIs this server does not have: named, so the error can say why.
const OTHER_DEEPSTACK_APIS: &[&str] = &[
    "VISION-DETECTION",
    "VISION-SCENE",
    "VISION-ENHANCE",
    "VISION_DETECTION",
    "VISION_SCENE",
    "VISION_ENHANCE",
];

/// The setting spelled `name` (its DeepStack name or an alias), if any.
pub fn key(name: &str) -> Option<&'static Key> {
    KEYS.iter()
        .find(|k| k.name == name || k.aliases.contains(&name))
}

/// What is wrong with one part of a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A word that is not `KEY=VALUE`.
    NotAPair(String),
    /// A name that is no setting.
    UnknownKey(String),
    /// A DeepStack setting for an API this server does not serve.
    OtherApi(String),
    /// The same setting twice with different values.
    Repeated(&'static str),
    /// A value that is not valid for its setting.
    BadValue {
        /// The setting.
        key: &'static str,
        /// The value as given; `None` for a secret, which is never echoed.
        value: Option<String>,
        /// What the setting expects.
        expected: String,
    },
    /// `MODE` on ARM.
    ModeOnArm,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::NotAPair(word) => write!(f, "{word:?} is not KEY=VALUE"),
            Problem::UnknownKey(name) => {
                write!(f, "unknown setting {name:?}")?;
                // Names are case-sensitive, as DeepStack's environment variables were.
                let upper = name.to_ascii_uppercase();
                if let Some(k) = key(&upper) {
                    write!(f, " (did you mean {}?)", k.name)?;
                }
                write!(
                    f,
                    "; valid settings: {}",
                    KEYS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
                )
            }
            Problem::OtherApi(name) => write!(
                f,
                "{name}: deepstack-rs serves DeepStack's face API only (VISION-FACE)"
            ),
            Problem::Repeated(name) => write!(f, "{name} is given twice, with different values"),
            Problem::BadValue {
                key,
                value: Some(value),
                expected,
            } => write!(f, "{key}: expected {expected}, got {value:?}"),
            Problem::BadValue {
                key,
                value: None,
                expected,
            } => write!(f, "{key}: expected {expected}"),
            Problem::ModeOnArm => write!(
                f,
                "MODE: {ARM_MODE_REFUSAL}. On ARM, deepstackd runs one fixed detector setting \
                 ({ARM_MODE}), chosen for the Raspberry Pi's speed: remove MODE"
            ),
        }
    }
}

/// Whether `arch` (as in `std::env::consts::ARCH`) is one where DeepStack had no speed modes.
pub fn is_arm(arch: &str) -> bool {
    arch == "aarch64" || arch == "arm" || arch.starts_with("armv")
}

/// Splits `start`'s arguments into `KEY=VALUE` pairs: each argument may hold several pairs
/// separated by white space (`"VISION-FACE=True PORT=8080"`, DeepStack's form); an argument
/// that is a single pair keeps its value whole, spaces included (`"API-KEY=two words"`).
pub fn split_pairs(args: &[String]) -> Result<Vec<(String, String)>, Vec<Problem>> {
    let mut pairs = Vec::new();
    let mut problems = Vec::new();
    for arg in args {
        let words: Vec<&str> = arg.split_whitespace().collect();
        // One pair whose value has spaces: `"API-KEY=two words"` as a separate argument.
        let whole = words.len() > 1 && words[1..].iter().all(|w| !looks_like_pair(w));
        let items = if whole { vec![arg.trim()] } else { words };
        for item in items {
            match item.split_once('=') {
                Some((k, v)) if !k.is_empty() => pairs.push((k.to_owned(), v.to_owned())),
                _ => problems.push(Problem::NotAPair(item.to_owned())),
            }
        }
    }
    if problems.is_empty() {
        Ok(pairs)
    } else {
        Err(problems)
    }
}

/// `NAME=...` where NAME is spelled like a setting name (letters, digits, '-' and '_').
fn looks_like_pair(word: &str) -> bool {
    word.split_once('=').is_some_and(|(k, _)| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

/// A checked configuration: DeepStack names, values in canonical form, in [`KEYS`] order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Settings {
    values: Vec<(&'static Key, String)>,
}

impl Settings {
    /// Checks every pair; all problems are reported together.
    pub fn validate(pairs: &[(String, String)], arch: &str) -> Result<Settings, Vec<Problem>> {
        let mut problems = Vec::new();
        let mut values: Vec<(&'static Key, String)> = Vec::new();
        for (name, value) in pairs {
            let Some(key) = key(name) else {
                if OTHER_DEEPSTACK_APIS.contains(&name.as_str()) {
                    problems.push(Problem::OtherApi(name.clone()));
                } else {
                    problems.push(Problem::UnknownKey(name.clone()));
                }
                continue;
            };
            let value = match check(key, value, arch) {
                Ok(v) => v,
                Err(p) => {
                    problems.push(p);
                    continue;
                }
            };
            match values.iter().find(|(k, _)| k.name == key.name) {
                Some((_, earlier)) if *earlier != value => {
                    problems.push(Problem::Repeated(key.name))
                }
                Some(_) => {}
                None => values.push((key, value)),
            }
        }
        if !problems.is_empty() {
            problems.dedup();
            return Err(problems);
        }
        values.sort_by_key(|(k, _)| KEYS.iter().position(|x| x.name == k.name));
        Ok(Settings { values })
    }

    /// Checks an env file's pairs as deepstackd reads them: a later line wins, an empty value
    /// means unset, and unknown names are ignored (they come back apart, for a warning).
    pub fn validate_file(
        pairs: &[(String, String)],
        arch: &str,
    ) -> (Result<Settings, Vec<Problem>>, Vec<String>) {
        let mut last: Vec<(String, String)> = Vec::new();
        let mut unknown = Vec::new();
        for (name, value) in pairs {
            let Some(k) = key(name) else {
                unknown.push(name.clone());
                continue;
            };
            last.retain(|(n, _)| key(n).map(|x| x.name) != Some(k.name));
            if !value.is_empty() {
                last.push((name.clone(), value.clone()));
            }
        }
        (Settings::validate(&last, arch), unknown)
    }

    /// The value of a setting, if set.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(k, _)| k.name == name)
            .map(|(_, v)| v.as_str())
    }

    /// Adds the values `deepstack start` uses when they are not given: PORT 80 (DeepStack's
    /// Pi CLI) and the service's state directory as DATA_DIR.
    pub fn with_service_defaults(mut self) -> Settings {
        for (name, value) in [("PORT", CLI_DEFAULT_PORT), ("DATA_DIR", SERVICE_DATA_DIR)] {
            if self.get(name).is_none() {
                self.values
                    .push((key(name).expect("a known key"), value.to_owned()));
            }
        }
        self.values
            .sort_by_key(|(k, _)| KEYS.iter().position(|x| x.name == k.name));
        self
    }

    /// Settings and values, in [`KEYS`] order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static Key, &str)> {
        self.values.iter().map(|(k, v)| (*k, v.as_str()))
    }

    /// Advice worth printing that does not stop the start.
    pub fn warnings(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.get("VISION-FACE") != Some("True") {
            out.push(
                "VISION-FACE=True is not set: the face API will answer 403 \
                 `Face endpoints not activated`"
                    .to_owned(),
            );
        }
        if let Some(dir) = self.get("DATA_DIR") {
            if !Path::new(dir).starts_with(SERVICE_DATA_DIR) {
                out.push(format!(
                    "DATA_DIR={dir}: the service may only write under {SERVICE_DATA_DIR}; \
                     allow {dir} with `systemctl edit deepstack` (ReadWritePaths={dir}) and \
                     make it writable by the user deepstack"
                ));
            }
        }
        out
    }
}

/// The canonical value of `key`, or what is wrong with it.
fn check(key: &'static Key, value: &str, arch: &str) -> Result<String, Problem> {
    let bad = |expected: &str| Problem::BadValue {
        key: key.name,
        value: (!key.is_secret()).then(|| value.to_owned()),
        expected: expected.to_owned(),
    };
    // A value is one line of the env file.
    if value.chars().any(|c| c.is_control()) {
        return Err(bad("text without control characters (no newlines)"));
    }
    match key.kind {
        Kind::Switch => match value {
            "True" | "False" => Ok(value.to_owned()),
            _ => Err(bad("exactly True or False")),
        },
        Kind::Mode if is_arm(arch) => Err(Problem::ModeOnArm),
        Kind::Mode => match value.to_ascii_lowercase().as_str() {
            "high" => Ok("High".to_owned()),
            "medium" => Ok("Medium".to_owned()),
            "low" => Ok("Low".to_owned()),
            _ => Err(bad("High, Medium or Low")),
        },
        Kind::Secret => Ok(value.to_owned()),
        Kind::Number { min, max } => match value.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n.to_string()),
            _ => Err(bad(&format!("a whole number from {min} to {max}"))),
        },
        Kind::Seconds => match value.parse::<f64>() {
            Ok(s) if s.is_finite() && s > 0.0 && s < 1e9 => Ok(value.to_owned()),
            _ => Err(bad("a positive number of seconds")),
        },
        Kind::Fraction => match value.parse::<f64>() {
            Ok(q) if (0.0..=1.0).contains(&q) => Ok(value.to_owned()),
            _ => Err(bad("a number from 0 to 1")),
        },
        Kind::Address => value
            .parse::<IpAddr>()
            .map(|a| a.to_string())
            .map_err(|_| bad("an IP address such as 0.0.0.0 or 127.0.0.1")),
        Kind::PostgresUrl => {
            let rest = value
                .strip_prefix("postgresql://")
                .or_else(|| value.strip_prefix("postgres://"));
            match rest {
                _ if value.is_empty() => Ok(String::new()),
                Some(rest) if rest.contains('@') && !rest.contains(char::is_whitespace) => {
                    Ok(value.to_owned())
                }
                _ => Err(bad("a postgresql://user@host:port/database URL")),
            }
        }
        Kind::Dir { must_exist } => {
            let path = Path::new(value);
            if !path.is_absolute() {
                Err(bad("an absolute path"))
            } else if must_exist && !path.is_dir() {
                Err(bad("an existing directory"))
            } else {
                Ok(value.to_owned())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn one_quoted_argument_or_several() {
        let one = split_pairs(&strings(&["VISION-FACE=True PORT=8080  API-KEY=s"])).unwrap();
        let many = split_pairs(&strings(&["VISION-FACE=True", "PORT=8080", "API-KEY=s"])).unwrap();
        assert_eq!(one, many);
        assert_eq!(one[1], ("PORT".to_owned(), "8080".to_owned()));
    }

    #[test]
    fn a_separate_pair_keeps_its_spaces() {
        let pairs = split_pairs(&strings(&["VISION-FACE=True", "API-KEY=two words"])).unwrap();
        assert_eq!(pairs[1], ("API-KEY".to_owned(), "two words".to_owned()));
        assert_eq!(
            split_pairs(&strings(&["PORT"])),
            Err(vec![Problem::NotAPair("PORT".to_owned())])
        );
    }

    #[test]
    fn values_are_canonical() {
        let pairs = split_pairs(&strings(&["VISION_FACE=True mode=x"])).unwrap();
        let problems = Settings::validate(&pairs, "x86_64").unwrap_err();
        assert!(matches!(&problems[0], Problem::UnknownKey(k) if k == "mode"));
        let pairs = split_pairs(&strings(&["VISION_FACE=True MODE=high BIND=::1"])).unwrap();
        let s = Settings::validate(&pairs, "x86_64").unwrap();
        assert_eq!(s.get("VISION-FACE"), Some("True"));
        assert_eq!(s.get("MODE"), Some("High"));
        assert_eq!(s.get("BIND"), Some("::1"));
    }

    #[test]
    fn secrets_are_never_echoed() {
        let pairs = vec![("API-KEY".to_owned(), "sec\nret".to_owned())];
        let problems = Settings::validate(&pairs, "x86_64").unwrap_err();
        let text = problems[0].to_string();
        assert!(
            text.starts_with("API-KEY") && !text.contains("sec"),
            "{text}"
        );
    }

    #[test]
    fn arm_names() {
        for arch in ["aarch64", "arm", "armv7"] {
            assert!(is_arm(arch), "{arch}");
        }
        for arch in ["x86_64", "x86", "riscv64"] {
            assert!(!is_arm(arch), "{arch}");
        }
    }
}
