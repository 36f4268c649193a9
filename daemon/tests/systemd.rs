//! deepstackd under systemd's protocols, with the real binary and libsystemd, as systemd would
//! run it but with sockets this test owns: the notification socket (`$NOTIFY_SOCKET`) and a
//! listening socket passed in (`$LISTEN_FDS`, socket activation).
//!
//! - `READY=1` comes once, after the port accepts connections;
//! - with `WATCHDOG_USEC` set, `WATCHDOG=1` keep-alives come with a `STATUS=` line;
//! - SIGTERM sends `STOPPING=1` and the process exits 0;
//! - a socket passed in is served, and the daemon binds none of its own;
//! - a request in flight at SIGTERM is still answered, new connections are not accepted.
//!
//! The journal's native entries and their fields are checked under a real systemd and
//! journald by packaging/systemd-check.sh.

mod common;
#[path = "api/harness.rs"]
mod harness;

use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port()
}

/// Reads notifications until one contains `wanted` or `within` passes; returns them all.
fn receive_until(socket: &UnixDatagram, wanted: &str, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        if let Ok(n) = socket.recv(&mut buf) {
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            let done = message.contains(wanted);
            seen.push(message);
            if done {
                return seen;
            }
        }
    }
    panic!("no {wanted:?} within {within:?}; got {seen:?}");
}

/// Sends SIGTERM to `pid`, as systemd does at a stop.
fn sigterm(pid: u32) {
    let pid = pid.to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
}

/// Kills the daemon if the test fails half-way (a panic must not leave it running).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn ready_watchdog_status_and_stopping_reach_systemd() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let log_path = dir.path().join("stderr.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let port = free_port();

    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_deepstackd"))
            .args(["--vision-face", "--bind", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .env_clear()
            .env("RUST_LOG", "info")
            .env("NOTIFY_SOCKET", &socket_path)
            .env("WATCHDOG_USEC", "1000000")
            .env("STATE_DIRECTORY", dir.path().join("state"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    );

    let before_ready = receive_until(&socket, "READY=1", Duration::from_secs(120));
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_ok(),
        "READY=1 came before the port accepted connections"
    );
    assert!(
        before_ready.iter().all(|m| !m.contains("WATCHDOG=1")),
        "keep-alives before READY: {before_ready:?}"
    );

    // Half of WATCHDOG_USEC: a keep-alive within a second, with the gallery in STATUS=.
    let alive = receive_until(&socket, "WATCHDOG=1", Duration::from_secs(3));
    let keepalive = alive.last().unwrap();
    assert!(
        keepalive.contains("STATUS=serving: 0 users, 0 samples"),
        "{keepalive:?}"
    );
    // STATE_DIRECTORY was the gallery's directory (no DATA_DIR given).
    assert!(dir.path().join("state/faces.sqlite3").is_file());

    sigterm(child.0.id());
    receive_until(&socket, "STOPPING=1", Duration::from_secs(30));
    let status = child.0.wait().unwrap();
    assert!(status.success(), "exit after SIGTERM: {status}");

    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(text.contains("listening on 127.0.0.1:"), "{text}");
}

#[test]
fn a_listening_socket_passed_in_is_served_instead_of_one_of_its_own() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let passed = listener.local_addr().unwrap().port();
    let (socket_path, log_path) = (dir.path().join("notify.sock"), dir.path().join("log"));
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    // systemd's protocol: the socket as fd 3, LISTEN_FDS=1 and LISTEN_PID=the daemon's pid,
    // which `exec` keeps from the shell that knows it ($$).
    let fd = listener.as_raw_fd();
    let mut command = Command::new("sh");
    command
        .args(["-c", r#"LISTEN_PID=$$ LISTEN_FDS=1 exec "$0" "$@""#])
        .arg(env!("CARGO_BIN_EXE_deepstackd"))
        .args(["--vision-face", "--port"])
        // Another port in the settings: the socket passed in wins, with a warning.
        .arg(free_port().to_string())
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("RUST_LOG", "info")
        .env("NOTIFY_SOCKET", &socket_path)
        .env("STATE_DIRECTORY", dir.path().join("state"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap());
    // SAFETY: dup2 and fcntl are async-signal-safe. The new fd 3 is not close-on-exec; if the
    // listener already is fd 3, dup2 does nothing and its close-on-exec flag is cleared.
    unsafe {
        command.pre_exec(move || {
            let done = if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(fd, 3)
            };
            match done {
                -1 => Err(std::io::Error::last_os_error()),
                _ => Ok(()),
            }
        });
    }
    let mut child = KillOnDrop(command.spawn().unwrap());
    drop(listener); // the daemon's copy is the only one left

    let ready = receive_until(&socket, "READY=1", Duration::from_secs(120));
    assert!(
        ready
            .last()
            .unwrap()
            .contains(&format!("STATUS=serving on port {passed}")),
        "{ready:?}"
    );
    let answer = harness::request(passed, "GET", "/v1/status", &harness::Body::Empty).unwrap();
    assert_eq!(answer.status, 200, "{}", answer.text());

    sigterm(child.0.id());
    assert!(child.0.wait().unwrap().success());
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        text.contains(&format!(
            "listening on 127.0.0.1:{passed} (the socket from deepstack.socket)"
        )),
        "{text}"
    );
    assert!(text.contains("but deepstack.socket listens on"), "{text}");
}

#[test]
fn a_request_in_flight_at_sigterm_is_answered_before_the_exit() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let daemon = harness::Daemon::start(&dir.path().join("data"), &[("VISION-FACE", "True")]);
    let (content_type, body) = harness::Multipart::new()
        .file("image", &common::photo_bytes("obama.jpg"))
        .encode();
    let head = format!(
        "POST /v1/vision/face HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Content-Type: {content_type}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut stream = TcpStream::connect(("127.0.0.1", daemon.port())).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    // Half the body is sent: the request is in flight when the signal arrives.
    let (first, rest) = body.split_at(body.len() / 2);
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(first).unwrap();
    stream.flush().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    sigterm(daemon.pid());
    std::thread::sleep(Duration::from_millis(500));
    // New connections are refused while the old one is served.
    assert!(TcpStream::connect(("127.0.0.1", daemon.port())).is_err());
    stream.write_all(rest).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains(r#""success":true"#), "{answer}");
    assert!(answer.contains(r#""predictions":[{"#), "{answer}");
    let log = daemon.log_text();
    assert!(daemon.terminate_wait().success(), "{log}");
}
