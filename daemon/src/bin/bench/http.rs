//! The release `deepstackd` on 127.0.0.1 and a tiny blocking HTTP/1.1 client over `TcpStream`
//! (adapted from daemon/tests/api/harness.rs: one request per connection, `Connection: close`).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Error;

pub const RECOGNIZE: &str = "/v1/vision/face/recognize";
pub const REGISTER: &str = "/v1/vision/face/register";
pub const DELETE: &str = "/v1/vision/face/delete";

/// The `deepstackd` built next to this bench (same profile).
pub fn daemon_binary() -> Result<PathBuf, Error> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("deepstackd");
    if !bin.is_file() {
        return Err(format!(
            "{} not found: run through `cargo run --release -p deepstackd --bin deepstack-bench`",
            bin.display()
        )
        .into());
    }
    Ok(bin)
}

/// A running `deepstackd`, killed on drop.
pub struct Daemon {
    child: Child,
    pub port: u16,
    /// From spawn to the `READY=1` notification.
    pub ready_after: Duration,
    /// Where its stderr (its log) goes.
    pub log: PathBuf,
}

impl Daemon {
    /// Starts `bin --vision-face --mode Medium --threadcount N` on `data_dir` and waits for its
    /// sd_notify `READY=1` on a socket of ours (sent once the models are loaded and the port bound).
    pub fn start(bin: &Path, data_dir: &Path, threads: usize, log: &Path) -> Result<Daemon, Error> {
        Daemon::start_with(bin, data_dir, threads, log, &[])
    }

    /// [`Daemon::start`] with settings of the environment added (`GALLERY_URL`, ...).
    pub fn start_with(
        bin: &Path,
        data_dir: &Path,
        threads: usize,
        log: &Path,
        env: &[(&str, &str)],
    ) -> Result<Daemon, Error> {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let sock_path = log.with_extension("notify");
        let _ = std::fs::remove_file(&sock_path);
        let sock = UnixDatagram::bind(&sock_path)?;
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        let mut cmd = Command::new(bin);
        for var in deepstackd::config::environment_variables() {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().copied())
            .env("RUST_LOG", "info")
            .env("NOTIFY_SOCKET", &sock_path)
            .args(["--vision-face", "--mode", "Medium", "--bind", "127.0.0.1"])
            .args(["--port", &port.to_string()])
            .args(["--threadcount", &threads.to_string()])
            .arg("--data-dir")
            .arg(data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log)?);
        let spawned = Instant::now();
        let child = cmd.spawn()?;
        let mut daemon = Daemon {
            child,
            port,
            ready_after: Duration::ZERO,
            log: log.to_path_buf(),
        };
        let mut buf = [0u8; 4096];
        loop {
            match sock.recv(&mut buf) {
                Ok(n) if buf[..n].split(|&b| b == b'\n').any(|l| l == b"READY=1") => {
                    daemon.ready_after = spawned.elapsed();
                    break;
                }
                _ => {}
            }
            if let Some(status) = daemon.child.try_wait()? {
                let text = std::fs::read_to_string(log).unwrap_or_default();
                return Err(format!("deepstackd exited with {status}:\n{text}").into());
            }
            if spawned.elapsed() > Duration::from_secs(300) {
                return Err(
                    format!("deepstackd not ready after 300 s, see {}", log.display()).into(),
                );
            }
        }
        let _ = std::fs::remove_file(&sock_path);
        Ok(daemon)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The stage times the daemon logged for its last `n` requests to `route`, a request
    /// each; `None` without them.
    pub fn logged_stages(&self, route: &str, n: usize) -> Option<Vec<LoggedStages>> {
        let log = std::fs::read_to_string(&self.log).ok()?;
        let prefix = format!("POST {route} 200 ");
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(&prefix)).collect();
        let last = &lines[lines.len().checked_sub(n.max(1))?..];
        last.iter()
            .map(|line| {
                let mut stages = [0.0; 4];
                for (stage, name) in stages
                    .iter_mut()
                    .zip(["queue=", "decode=", "detect=", "embed="])
                {
                    let word = line.split_whitespace().find_map(|w| w.strip_prefix(name))?;
                    *stage = word.strip_suffix("ms")?.parse().ok()?;
                }
                Some(stages)
            })
            .collect()
    }

    /// POST a multipart form; an error unless the answer is 200 with `"success": true`.
    pub fn post(
        &self,
        path: &str,
        fields: &[(&str, &str)],
        image: Option<&[u8]>,
    ) -> Result<serde_json::Value, Error> {
        send(self.port, &request(self.port, path, fields, image))
    }

    /// GET `path`: the JSON answer if it is a 200.
    pub fn get(&self, path: &str) -> Result<serde_json::Value, Error> {
        let message = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\n\r\n",
            self.port
        );
        match exchange(self.port, message.as_bytes())? {
            (200, json) => Ok(json),
            (status, json) => Err(format!("status {status}: {json}").into()),
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The stage times the daemon logs for a request (`deepstackd::stage_times`), ms: queue,
/// decode, detect, embed.
pub type LoggedStages = [f64; 4];

/// A whole POST request with a multipart/form-data body (text fields, then an `image` file part).
pub fn request(port: u16, path: &str, fields: &[(&str, &str)], image: Option<&[u8]>) -> Vec<u8> {
    let boundary = "deepstack-bench-boundary-5b2e8a";
    let mut body = Vec::new();
    for (name, value) in fields {
        body.extend_from_slice(
            format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n{value}\r\n")
                .as_bytes(),
        );
    }
    if let Some(bytes) = image {
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"image.jpg\"\r\n\
                 Content-Type: application/octet-stream\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(bytes);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    let mut message = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\
         Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    message.extend_from_slice(&body);
    message
}

/// Sends a request made by [`request`] on a fresh connection; the JSON answer if it is a 200
/// with `"success": true`.
pub fn send(port: u16, message: &[u8]) -> Result<serde_json::Value, Error> {
    let (status, json) = exchange(port, message)?;
    if status != 200 || json["success"] != true {
        return Err(format!("status {status}: {json}").into());
    }
    Ok(json)
}

/// Sends `message` on a fresh connection: the answer's status and JSON body, whatever they say.
pub fn exchange(port: u16, message: &[u8]) -> Result<(u16, serde_json::Value), Error> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(180)))?;
    stream.write_all(message)?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {head}"))?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        crate::dev_support::dechunk(&raw[end + 4..]).ok_or("bad chunked body")?
    } else {
        raw[end + 4..].to_vec()
    };
    let json: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
        format!(
            "status {status}, not JSON ({e}): {}",
            String::from_utf8_lossy(&body)
        )
    })?;
    Ok((status, json))
}
