//! The systemd service protocol (sd_notify), written against the socket directly: one
//! datagram per state change to `$NOTIFY_SOCKET`. Outside systemd the variable is unset and
//! every call does nothing.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

/// The variables systemd sets for a service that this module (and `config`, for
/// `STATE_DIRECTORY`) reads.
pub const SYSTEMD_VARIABLES: &[&str] = &[
    "STATE_DIRECTORY",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "JOURNAL_STREAM",
];

/// Send `state` (e.g. `READY=1`, `STATUS=...`, `STOPPING=1`) to systemd, if it listens.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send(&path, state) {
        log::warn!("sd_notify {state:?}: {e}");
    }
}

fn send(path: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    let socket = UnixDatagram::unbound()?;
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path);
    if let Some(name) = bytes.strip_prefix(b"@") {
        // An abstract socket (Linux): '@' stands for the leading NUL byte.
        use std::os::linux::net::SocketAddrExt;
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        socket.send_to_addr(state.as_bytes(), &addr)?;
    } else {
        socket.send_to(state.as_bytes(), path)?;
    }
    Ok(())
}

/// Whether stderr is connected to the journal (`$JOURNAL_STREAM` names stderr's device and
/// inode): log lines then need no timestamp, and a `<N>` prefix gives each its priority.
pub fn stderr_is_journal() -> bool {
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

/// The syslog priority journald reads from a `<N>` line prefix (sd-daemon.h's SD_ERR, ...).
pub fn journal_priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

/// Whether systemd (or anything speaking its protocol) listens for our notifications.
pub fn notifications_wanted() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some()
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
                Ok(status) if watchdog.is_some() => notify(&format!("WATCHDOG=1\nSTATUS={status}")),
                Ok(status) => notify(&format!("STATUS={status}")),
                Err(reason) => {
                    log::error!("health check failed: {reason}; watchdog keep-alives stop");
                    notify(&format!("STATUS=unhealthy: {reason}"));
                }
            }
            std::thread::sleep(period);
        })
        .map(drop)
}

/// The watchdog interval systemd asks for (`WATCHDOG_USEC`), if any and meant for us.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok()? != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notify_reaches_a_socket_the_test_owns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        send(path.as_os_str(), "READY=1\nSTATUS=serving").unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=serving");
    }
}
