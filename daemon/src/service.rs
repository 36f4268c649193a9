//! The systemd service integration, through libsystemd (the `systemd` crate): readiness,
//! status and watchdog notifications (sd_notify), the listening socket deepstack.socket
//! passes in (sd_listen_fds), and log records as native journal entries whose fields a log
//! pipeline can filter on (sd_journal_sendv). Outside systemd each part falls back on its
//! own: no notifications, a socket the daemon binds itself, env_logger on stderr.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::time::Duration;

use systemd::daemon;

/// The variables systemd sets for a service that this module (and `config`, for
/// `STATE_DIRECTORY`) reads.
pub const SYSTEMD_VARIABLES: &[&str] = &[
    "STATE_DIRECTORY",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "JOURNAL_STREAM",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
];

/// The journal's SYSLOG_IDENTIFIER of every entry (journalctl prints it before the message).
const SYSLOG_IDENTIFIER: &str = "deepstackd";

/// Tells systemd about a state change (`READY`, `STATUS`, `WATCHDOG`, `STOPPING`), if it
/// listens: `notify(&[("READY", "1"), ("STATUS", "serving")])`.
pub fn notify(states: &[(&str, &str)]) {
    if let Err(e) = daemon::notify(states.iter()) {
        log::warn!("sd_notify {states:?}: {e}");
    }
}

/// Whether systemd (or anything speaking its protocol) listens for our notifications.
pub fn notifications_wanted() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
}

/// The watchdog interval systemd asks of this process (`WATCHDOG_USEC`, if `WATCHDOG_PID` is
/// ours), if any.
pub fn watchdog_interval() -> Option<Duration> {
    match daemon::watchdog_enabled() {
        Ok(0) => None,
        Ok(usec) => Some(Duration::from_micros(usec)),
        Err(e) => {
            log::warn!("WATCHDOG_USEC: {e}");
            None
        }
    }
}

/// How often [`spawn_keepalive`] checks the process when no watchdog is asked for (it then
/// only refreshes `STATUS=`).
const STATUS_PERIOD: Duration = Duration::from_secs(10);

/// Starts a thread that runs `check` periodically and tells systemd the result: `STATUS=` with
/// the text it returns, plus `WATCHDOG=1` (at half the watchdog interval, if one is asked for)
/// only while it returns `Ok`. When the check fails, the keep-alives stop and systemd restarts
/// the service once the watchdog interval has passed.
pub fn spawn_keepalive<F>(check: F) -> std::io::Result<()>
where
    F: Fn() -> Result<String, String> + Send + 'static,
{
    let watchdog = watchdog_interval();
    let period = watchdog.map_or(STATUS_PERIOD, |w| (w / 2).min(STATUS_PERIOD));
    std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || loop {
            match check() {
                Ok(status) if watchdog.is_some() => {
                    notify(&[("WATCHDOG", "1"), ("STATUS", &status)])
                }
                Ok(status) => notify(&[("STATUS", &status)]),
                Err(reason) => {
                    log::error!("health check failed: {reason}; watchdog keep-alives stop");
                    notify(&[("STATUS", &format!("unhealthy: {reason}"))]);
                }
            }
            std::thread::sleep(period);
        })
        .map(drop)
}

/// The listening TCP socket systemd passed in (socket activation: deepstack.socket owns the
/// port), if any. More than one socket, or one that is not a listening TCP socket, is a unit
/// misconfiguration and an error.
pub fn inherited_listener() -> Result<Option<TcpListener>, String> {
    let fds = daemon::listen_fds().map_err(|e| format!("LISTEN_FDS: {e}"))?;
    let mut fds = fds.iter();
    let Some(fd) = fds.next() else {
        return Ok(None);
    };
    if fds.next().is_some() {
        return Err(
            "systemd passed more than one socket: deepstack.socket must have exactly \
             one ListenStream="
                .to_owned(),
        );
    }
    let listener = daemon::tcp_listener(fd).map_err(|e| {
        format!("the socket systemd passed (fd {fd}) is not a listening TCP socket: {e}")
    })?;
    // actix drives it with epoll; a blocking accept would stall a worker.
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("the socket systemd passed: {e}"))?;
    Ok(Some(listener))
}

/// The logger: native journal entries when stderr is the journal (the daemon runs under
/// systemd), env_logger with timestamps otherwise. `RUST_LOG` filters both (default: info).
pub fn init_logger() {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"));
    if !stderr_is_journal() {
        builder.init();
        return;
    }
    let filter = builder.build();
    log::set_max_level(filter.filter());
    if log::set_boxed_logger(Box::new(JournalLogger { filter })).is_err() {
        eprintln!("deepstackd: a logger was already installed");
    }
}

/// Whether stderr is connected to the journal (`$JOURNAL_STREAM` names stderr's device and
/// inode), as systemd sets it up for a service with the default StandardError=journal.
fn stderr_is_journal() -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;
    let Some(stream) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(fd) = std::io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    let Ok(meta) = std::fs::File::from(fd).metadata() else {
        return false;
    };
    stream.to_str() == Some(&format!("{}:{}", meta.dev(), meta.ino()))
}

/// Sends each record as one journal entry: MESSAGE, PRIORITY, SYSLOG_IDENTIFIER, TARGET, and
/// one field per key-value of the record (`route = "recognize"` -> `ROUTE=recognize`).
struct JournalLogger {
    /// env_logger's own filter (RUST_LOG), so both backends keep the same lines.
    filter: env_logger::Logger,
}

impl log::Log for JournalLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &log::Record<'_>) {
        if !self.filter.matches(record) {
            return;
        }
        let fields = journal_fields(record);
        let refs: Vec<&str> = fields.iter().map(String::as_str).collect();
        if systemd::journal::send(&refs).is_err() {
            // journald's socket gone (journald restarting): stderr is still the journal's
            // stream, which reads a `<N>` prefix as the priority.
            let priority = journal_priority(record.level());
            eprintln!("<{priority}>{}: {}", record.target(), record.args());
        }
    }

    fn flush(&self) {}
}

/// The `NAME=value` fields of a record's journal entry.
fn journal_fields(record: &log::Record<'_>) -> Vec<String> {
    let mut fields = vec![
        format!("MESSAGE={}", record.args()),
        format!("PRIORITY={}", journal_priority(record.level())),
        format!("SYSLOG_IDENTIFIER={SYSLOG_IDENTIFIER}"),
        format!("TARGET={}", record.target()),
    ];
    struct Collect<'a>(&'a mut Vec<String>);
    impl<'kvs> log::kv::VisitSource<'kvs> for Collect<'_> {
        fn visit_pair(
            &mut self,
            key: log::kv::Key<'kvs>,
            value: log::kv::Value<'kvs>,
        ) -> Result<(), log::kv::Error> {
            if let Some(name) = journal_field_name(key.as_str()) {
                let mut field = name;
                field.push('=');
                let _ = write!(field, "{value}");
                self.0.push(field);
            }
            Ok(())
        }
    }
    let _ = record.key_values().visit(&mut Collect(&mut fields));
    fields
}

/// A key as a journal field name: upper case letters, digits and `_`, not starting with `_`
/// (those are the journal's trusted fields) or a digit, at most 64 bytes; `None` if nothing is
/// left or it would overwrite one of the fields every entry carries.
fn journal_field_name(key: &str) -> Option<String> {
    let name: String = key
        .chars()
        .map(|c| match c {
            'a'..='z' => c.to_ascii_uppercase(),
            'A'..='Z' | '0'..='9' => c,
            _ => '_',
        })
        .skip_while(|c| *c == '_' || c.is_ascii_digit())
        .take(64)
        .collect();
    let reserved = ["MESSAGE", "PRIORITY", "SYSLOG_IDENTIFIER", "TARGET"];
    (!name.is_empty() && !reserved.contains(&name.as_str())).then_some(name)
}

/// The syslog priority of a log level (sd-daemon.h's SD_ERR, SD_WARNING, ...).
fn journal_priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_become_journal_fields() {
        let kvs: &[(&str, log::kv::Value)] = &[
            ("route", "recognize".into()),
            ("http_status", 200u16.into()),
            ("duration_ms", 31u64.into()),
            ("message", "not a second MESSAGE".into()),
            ("_PID", 1u8.into()),
        ];
        let record = log::Record::builder()
            .args(format_args!("POST /v1/vision/face/recognize 200"))
            .level(log::Level::Info)
            .target("deepstackd::http")
            .key_values(&kvs)
            .build();
        assert_eq!(
            journal_fields(&record),
            [
                "MESSAGE=POST /v1/vision/face/recognize 200",
                "PRIORITY=6",
                "SYSLOG_IDENTIFIER=deepstackd",
                "TARGET=deepstackd::http",
                "ROUTE=recognize",
                "HTTP_STATUS=200",
                "DURATION_MS=31",
                "PID=1",
            ]
        );
    }

    #[test]
    fn field_names_follow_the_journal_rules() {
        assert_eq!(journal_field_name("faces").as_deref(), Some("FACES"));
        assert_eq!(journal_field_name("a-b.c").as_deref(), Some("A_B_C"));
        assert_eq!(journal_field_name("9lives").as_deref(), Some("LIVES"));
        assert_eq!(journal_field_name("__").as_deref(), None);
        assert_eq!(journal_field_name("priority").as_deref(), None);
        assert_eq!(
            journal_field_name(&"k".repeat(100)).map(|n| n.len()),
            Some(64)
        );
    }
}
