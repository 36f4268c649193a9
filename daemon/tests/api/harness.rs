//! The API tests' tools: the real `deepstackd` binary on 127.0.0.1, and a tiny blocking
//! HTTP/1.1 client over `TcpStream` that sends exactly the bytes a test asks for.
//!
//! Shared by api.rs, hostile.rs, crash.rs and storage.rs (`#[path]`), each using only some of it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a daemon may take to load its models and answer /v1/status.
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A daemon on a fresh data directory (removed after the test); derefs to the [`Daemon`].
pub struct Server {
    /// The daemon.
    pub daemon: Daemon,
    /// Holds the data directory, `<tmp>/data`.
    pub tmp: tempfile::TempDir,
}

impl Server {
    /// Starts the daemon with `env` on a new temporary data directory.
    pub fn start(env: &[(&str, &str)]) -> Server {
        let tmp = tempfile::tempdir().expect("temp dir");
        let daemon = Daemon::start(&tmp.path().join("data"), env);
        Server { daemon, tmp }
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.tmp.path().join("data")
    }
}

impl std::ops::Deref for Server {
    type Target = Daemon;
    fn deref(&self) -> &Daemon {
        &self.daemon
    }
}

/// A running `deepstackd`, killed on drop.
pub struct Daemon {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Daemon {
    /// Starts the daemon with `env` (settings by name) on `data_dir` and waits until it answers.
    pub fn start(data_dir: &Path, env: &[(&str, &str)]) -> Daemon {
        // A free port can be taken by someone else between our probe and the bind: retry.
        for attempt in 0.. {
            let port = free_port();
            let log = data_dir.with_extension(format!("log-{port}"));
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_deepstackd"));
            for var in deepstackd::config::environment_variables() {
                cmd.env_remove(var);
            }
            cmd.env("RUST_LOG", "info")
                .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
                .arg("--data-dir")
                .arg(data_dir)
                .envs(env.iter().copied())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).expect("daemon log file"));
            let child = cmd.spawn().expect("spawn deepstackd");
            let mut daemon = Daemon { child, port, log };
            match daemon.wait_ready() {
                Ok(()) => return daemon,
                Err(why) if attempt < 3 && daemon.log_text().contains("Address already in use") => {
                    eprintln!("retrying on another port: {why}");
                }
                Err(why) => panic!("deepstackd did not start: {why}\n{}", daemon.log_text()),
            }
        }
        unreachable!()
    }

    fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Err(format!("exited with {status}"));
            }
            if let Ok(res) = self.try_request("GET", "/v1/status", &Body::Empty) {
                if res.status == 200 {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Err("not ready in time".into())
    }

    /// The daemon's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Any request; an error if the connection failed or no HTTP answer came back.
    pub fn request(&self, method: &str, path: &str, body: &Body) -> std::io::Result<Response> {
        self.try_request(method, path, body)
    }

    /// POST `body` to `path`.
    pub fn post(&self, path: &str, body: &Body) -> Response {
        self.try_request("POST", path, body)
            .unwrap_or_else(|e| panic!("POST {path}: {e}\n{}", self.log_text()))
    }

    /// Any request with extra headers (`X-Api-Key`, ...); panics if no answer came back.
    pub fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &Body,
    ) -> Response {
        request_with_headers(self.port, method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", self.log_text()))
    }

    /// GET `path`.
    pub fn get(&self, path: &str) -> Response {
        self.try_request("GET", path, &Body::Empty)
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    /// GET /v1/status as JSON.
    pub fn status(&self) -> Value {
        self.get("/v1/status").json()
    }

    fn try_request(&self, method: &str, path: &str, body: &Body) -> std::io::Result<Response> {
        request(self.port, method, path, body)
    }

    /// Stops the daemon with SIGKILL (no chance to flush anything: a crash).
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops the daemon with SIGTERM and returns its exit status.
    pub fn terminate(self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -TERM {pid}");
        self.terminate_wait()
    }

    /// Waits for the exit of a daemon that was sent a stop signal, and returns its status.
    pub fn terminate_wait(mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("probe a free port")
        .port()
}

/// A request body.
pub enum Body {
    /// No body at all.
    Empty,
    /// multipart/form-data.
    Multipart(Multipart),
    /// application/x-www-form-urlencoded, from (name, value) pairs.
    Urlencoded(Vec<(String, String)>),
    /// Any bytes with any content type.
    Raw {
        /// The Content-Type header; empty for none at all.
        content_type: String,
        /// The body.
        bytes: Vec<u8>,
    },
}

/// A multipart/form-data body under construction.
#[derive(Default)]
pub struct Multipart {
    parts: Vec<(String, Option<String>, Vec<u8>)>,
}

impl Multipart {
    /// An empty form.
    pub fn new() -> Multipart {
        Multipart::default()
    }

    /// Adds a text field.
    pub fn text(mut self, name: &str, value: &str) -> Multipart {
        self.parts
            .push((name.to_owned(), None, value.as_bytes().to_vec()));
        self
    }

    /// Adds a text field whose value is any bytes (not UTF-8, for instance).
    pub fn text_bytes(mut self, name: &str, value: &[u8]) -> Multipart {
        self.parts.push((name.to_owned(), None, value.to_vec()));
        self
    }

    /// Adds a file part (filename = the field name, as deepstack-python sends).
    pub fn file(mut self, name: &str, bytes: &[u8]) -> Multipart {
        self.parts
            .push((name.to_owned(), Some(name.to_owned()), bytes.to_vec()));
        self
    }

    /// Adds each (name, value) pair as a text field.
    pub fn texts(self, fields: &[(&str, &str)]) -> Multipart {
        fields.iter().fold(self, |m, (k, v)| m.text(k, v))
    }

    /// The finished body.
    pub fn body(self) -> Body {
        Body::Multipart(self)
    }

    /// The content type and bytes this form is sent as.
    pub fn encode(&self) -> (String, Vec<u8>) {
        let boundary = "deepstack-test-boundary-7d9f1c";
        let mut out = Vec::new();
        for (name, filename, bytes) in &self.parts {
            out.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
            match filename {
                Some(f) => out.extend_from_slice(
                    format!(
                        "Content-Disposition: form-data; name=\"{name}\"; filename=\"{f}\"\r\n\
                         Content-Type: application/octet-stream\r\n\r\n"
                    )
                    .as_bytes(),
                ),
                None => out.extend_from_slice(
                    format!("Content-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
                ),
            }
            out.extend_from_slice(bytes);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        (format!("multipart/form-data; boundary={boundary}"), out)
    }
}

/// Shorthand: a multipart body of text fields.
pub fn fields(pairs: &[(&str, &str)]) -> Multipart {
    Multipart::new().texts(pairs)
}

/// Shorthand: an urlencoded body.
pub fn urlencoded(pairs: &[(&str, &str)]) -> Body {
    Body::Urlencoded(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    )
}

fn encode_urlencoded(pairs: &[(String, String)]) -> Vec<u8> {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                b' ' => "+".to_owned(),
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
        .into_bytes()
}

/// The JSON of a 200 answer with `"success": true` and DeepStack's `"duration": 0`;
/// panics with the body otherwise.
pub fn ok(res: Response) -> Value {
    let body = res.json();
    assert_eq!(
        (res.status, &body["success"]),
        (200, &Value::Bool(true)),
        "{body}"
    );
    assert_eq!(body["duration"], Value::from(0));
    body
}

/// An HTTP answer.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
    /// The body (de-chunked).
    pub body: Vec<u8>,
}

impl Response {
    /// The body as JSON; panics with the body if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}), status {}: {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// One request on a fresh connection (`Connection: close`), read to the end.
pub fn request(port: u16, method: &str, path: &str, body: &Body) -> std::io::Result<Response> {
    request_with_headers(port, method, path, &[], body)
}

/// [`request`] with extra headers.
pub fn request_with_headers(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &Body,
) -> std::io::Result<Response> {
    let (content_type, bytes) = match body {
        Body::Empty => (None, Vec::new()),
        Body::Multipart(m) => {
            let (ct, b) = m.encode();
            (Some(ct), b)
        }
        Body::Urlencoded(pairs) => (
            Some("application/x-www-form-urlencoded".to_owned()),
            encode_urlencoded(pairs),
        ),
        Body::Raw {
            content_type,
            bytes,
        } => (Some(content_type.clone()), bytes.clone()),
    };
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(180)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        bytes.len()
    );
    if let Some(ct) = content_type.filter(|ct| !ct.is_empty()) {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let mut message = head.into_bytes();
    message.extend_from_slice(&bytes);
    exchange(stream, &message)
}

/// Sends `message` (a whole HTTP request, any bytes) on a fresh connection and reads the
/// answer to the end.
pub fn raw_request(port: u16, message: &[u8]) -> std::io::Result<Response> {
    let stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(180)))?;
    exchange(stream, message)
}

fn exchange(mut stream: TcpStream, message: &[u8]) -> std::io::Result<Response> {
    // A server may answer and close before the whole body is sent (over a limit): then the
    // write fails, and the answer is still there to read.
    let written = stream.write_all(message);
    let mut raw = Vec::new();
    let read = stream.read_to_end(&mut raw);
    match (written, read) {
        _ if !raw.is_empty() => parse_response(&raw),
        (Err(e), _) | (Ok(()), Err(e)) => Err(e),
        (Ok(()), Ok(_)) => parse_response(&raw),
    }
}

/// Reads an answer from `stream` to the end (the server closes the connection).
pub fn read_response(stream: &mut TcpStream) -> std::io::Result<Response> {
    let mut raw = Vec::new();
    let read = stream.read_to_end(&mut raw);
    match read {
        Err(e) if raw.is_empty() => Err(e),
        _ => parse_response(&raw),
    }
}

fn parse_response(raw: &[u8]) -> std::io::Result<Response> {
    let bad = |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.eq_ignore_ascii_case("chunked"));
    if chunked {
        body = crate::common::dev_support::dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// The daemon's routes, as the contract names them.
pub mod routes {
    pub const DETECT: &str = "/v1/vision/face";
    pub const DETECT_SLASH: &str = "/v1/vision/face/";
    pub const RECOGNIZE: &str = "/v1/vision/face/recognize";
    pub const REGISTER: &str = "/v1/vision/face/register";
    pub const MATCH: &str = "/v1/vision/face/match";
    pub const LIST: &str = "/v1/vision/face/list";
    pub const DELETE: &str = "/v1/vision/face/delete";
    pub const BACKUP: &str = "/v1/backup";
    pub const RESTORE: &str = "/v1/restore";
    pub const STATUS: &str = "/v1/status";
    pub const GALLERY_USERS: &str = "/v1/gallery/users";
    pub const GALLERY_SAMPLES: &str = "/v1/gallery/samples";
    pub const REEMBED: &str = "/v1/gallery/reembed";
    pub const OPENAPI: &str = "/openapi.json";
    pub const PAGE: &str = "/";
}
