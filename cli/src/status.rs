//! `GET /v1/status` over a plain HTTP/1.0 connection: enough for a local health probe without
//! an HTTP client library.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// How long the probe waits to connect, and then for each read.
pub const TIMEOUT: Duration = Duration::from_secs(3);
/// The largest answer read; a status document is a few hundred bytes.
const MAX_RESPONSE: u64 = 1 << 20;

/// An HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub code: u16,
    /// The body, as text.
    pub body: String,
    /// How long the request took.
    pub elapsed: Duration,
}

/// Where to reach a daemon that listens on `bind` (its BIND, if set) and `port`: the loopback
/// address when it listens on all addresses.
pub fn probe_address(bind: Option<IpAddr>, port: u16) -> SocketAddr {
    let ip = match bind {
        None => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Some(ip) if ip.is_unspecified() && ip.is_ipv4() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        Some(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        Some(ip) => ip,
    };
    SocketAddr::new(ip, port)
}

/// `GET path` on `addr`.
pub fn get(addr: SocketAddr, path: &str, timeout: Duration) -> io::Result<Response> {
    let started = Instant::now();
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let host = match addr {
        SocketAddr::V4(a) => a.to_string(),
        SocketAddr::V6(a) => format!("[{}]:{}", a.ip(), a.port()),
    };
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: {host}\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.take(MAX_RESPONSE).read_to_end(&mut raw)?;
    let mut response = parse_response(&raw)?;
    response.elapsed = started.elapsed();
    Ok(response)
}

fn parse_response(raw: &[u8]) -> io::Result<Response> {
    let invalid = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    let text = String::from_utf8_lossy(raw);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| invalid("not an HTTP answer (no end of headers)"))?;
    let status_line = head.lines().next().unwrap_or_default();
    let mut parts = status_line.split_whitespace();
    let code = match (parts.next(), parts.next()) {
        (Some(v), Some(code)) if v.starts_with("HTTP/") => code.parse::<u16>().ok(),
        _ => None,
    }
    .ok_or_else(|| invalid("not an HTTP answer (bad status line)"))?;
    Ok(Response {
        code,
        body: body.to_owned(),
        elapsed: Duration::ZERO,
    })
}

/// The status document as `name: value` lines (DeepStack's `success` and `duration` left out,
/// lists one item a line), or the body as it is when it is not a JSON object.
pub fn describe(body: &str) -> Vec<(String, String)> {
    use serde_json::Value;
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(body) else {
        return vec![("body".to_owned(), body.trim().to_owned())];
    };
    let mut out = Vec::new();
    for (name, value) in map {
        match value {
            _ if name == "success" || name == "duration" => {}
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let label = if i == 0 { name.clone() } else { String::new() };
                    out.push((label, compact(item)));
                }
            }
            other => out.push((name, compact(&other))),
        }
    }
    out
}

/// A value on one line: strings bare, objects as `key=value` pairs, checksums shortened.
fn compact(value: &serde_json::Value) -> String {
    use serde_json::Value;
    match value {
        Value::String(s) if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) => {
            format!("{}...", &s[..12])
        }
        Value::String(s) => s.clone(),
        Value::Object(map) => map
            .iter()
            .map(|(k, v)| format!("{k}={}", compact(v)))
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_answers() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Type: x\r\n\r\n{\"a\":1}").unwrap();
        assert_eq!((r.code, r.body.as_str()), (200, "{\"a\":1}"));
        assert!(parse_response(b"garbage").is_err());
        assert!(parse_response(b"SSH-2.0\r\n\r\n").is_err());
    }

    #[test]
    fn loopback_for_unspecified() {
        assert_eq!(probe_address(None, 80).to_string(), "127.0.0.1:80");
        let any6: IpAddr = "::".parse().unwrap();
        assert_eq!(probe_address(Some(any6), 80).to_string(), "[::1]:80");
        let lan: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(probe_address(Some(lan), 81).to_string(), "192.0.2.7:81");
    }

    #[test]
    fn describes_json_objects() {
        let sha = "ab".repeat(32);
        let d = describe(&format!(
            "{{\"success\":true,\"version\":\"0.1.0\",\"users\":3,\"duration\":0,\
             \"models\":[{{\"role\":\"detector\",\"sha256\":\"{sha}\"}},{{\"role\":\"recognizer\"}}]}}"
        ));
        let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
        assert!(d.contains(&pair("version", "0.1.0")), "{d:?}");
        assert!(d.contains(&pair("users", "3")));
        assert!(d.contains(&pair("models", "role=detector sha256=abababababab...")));
        assert!(d.contains(&pair("", "role=recognizer")), "{d:?}");
        assert!(!d.iter().any(|(k, _)| k == "success" || k == "duration"));
        assert_eq!(describe("oops")[0].1, "oops");
    }
}
