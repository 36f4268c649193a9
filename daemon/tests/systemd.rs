//! deepstackd under systemd's protocols, with the real binary: the notification socket
//! (`$NOTIFY_SOCKET`, a socket this test owns, as systemd would) and the journal's stderr
//! (`$JOURNAL_STREAM`).
//!
//! - `READY=1` comes once, after the port accepts connections;
//! - with `WATCHDOG_USEC` set, `WATCHDOG=1` keep-alives come with a `STATUS=` line;
//! - SIGTERM sends `STOPPING=1` and the process exits 0;
//! - every log line carries a `<N>` journal priority and no timestamp of its own;
//! - a request in flight at SIGTERM is still answered, new connections are not accepted.

mod common;
#[path = "api/harness.rs"]
mod harness;

use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::MetadataExt;
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

/// Kills the daemon if the test fails half-way (a panic must not leave it running).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn ready_watchdog_status_and_stopping_reach_systemd_and_logs_suit_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let log_path = dir.path().join("stderr.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let meta = log.metadata().unwrap();
    let port = free_port();

    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_deepstackd"))
            .args(["--vision-face", "--bind", "127.0.0.1", "--port"])
            .arg(port.to_string())
            .env_clear()
            .env("RUST_LOG", "info")
            .env("NOTIFY_SOCKET", &socket_path)
            .env("WATCHDOG_USEC", "1000000")
            .env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()))
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

    let pid = child.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    receive_until(&socket, "STOPPING=1", Duration::from_secs(30));
    let status = child.0.wait().unwrap();
    assert!(status.success(), "exit after SIGTERM: {status}");

    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        text.contains("<6>deepstackd: listening on 127.0.0.1:"),
        "{text}"
    );
    for line in text.lines() {
        let priority = line
            .strip_prefix('<')
            .and_then(|rest| rest.split_once('>'))
            .map(|(n, _)| n);
        assert!(
            matches!(priority, Some("3" | "4" | "6" | "7")),
            "a log line without a journal priority: {line:?}"
        );
    }
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
    let pid = daemon.pid().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
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
