//! The memory budget and the body deadline against the real daemon, with a small budget set
//! on the command line: scaled-down versions of the two attacks of SECURITY.md ("Memory"),
//! many large uploads at once and uploads that stall. Everything on 127.0.0.1, bounded in
//! count and time.
//!
//! Budget 16 MiB, BODY_TIMEOUT 3 s. Two stalled uploads declaring 4 MiB each hold 8 MiB;
//! twelve uploads of 9 MiB sent at once then find no room and are refused after the admission
//! wait (their bodies read and dropped, so that they get to read the answer); an
//! ordinary recognize (about 6 MiB: its body and its decode) and a registration still get
//! theirs and are answered correctly; the stalled two are cut at the deadline. Every answer
//! is DeepStack's JSON error shape with a `reason` naming the setting, the daemon's peak
//! memory stays within the budget plus a stated margin, and the gallery holds what was
//! registered during the attack.

mod common;
#[path = "api/harness.rs"]
mod harness;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use harness::{fields, read_response, Multipart, Response, Server};

const MIB: usize = 1 << 20;
const BUDGET: usize = 16 * MIB;
const BUSY: &str = "failed to process request before timeout";
/// What the process may hold above its resident size before the attack, besides the
/// budget: the inference threads' working memory for the ordinary requests (the detector's
/// and SFace's tensors, a few MiB each) and allocator slack.
const MARGIN: usize = 48 * MIB;

use common::photo_bytes as photo;

/// A recognize whose head declares `declared` bytes, of which `send` are sent (its part is
/// never closed: the body is not valid multipart); the stream is left open.
fn upload_started(port: u16, declared: usize, send: usize) -> TcpStream {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "POST /v1/vision/face/recognize HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\
         Content-Type: multipart/form-data; boundary=XyZ\r\nContent-Length: {declared}\r\n\r\n\
         --XyZ\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(&vec![0x55; send]).unwrap();
    s
}

fn vm(pid: u32, field: &str) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: usize = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in {status}"));
    kb * 1024
}

fn assert_refused(res: &Response, setting: &str, what: &str) {
    assert_eq!(res.status, 500, "{what}: {}", res.text());
    let json = res.json();
    assert_eq!(json["success"], false, "{what}: {json}");
    assert_eq!(json["error"], BUSY, "{what}: {json}");
    let reason = json["reason"].as_str().unwrap_or_default();
    assert!(reason.contains(setting), "{what}: {json}");
}

#[test]
fn uploads_past_the_memory_budget_and_stalled_ones_are_refused_and_the_daemon_serves_on() {
    let server = Server::start(&[
        ("VISION-FACE", "True"),
        ("MEMORY_BUDGET_BYTES", &BUDGET.to_string()),
        ("BODY_TIMEOUT", "3"),
    ]);
    let port = server.port();
    let obama = photo("obama.jpg");
    let res = server.post(
        "/v1/vision/face/register",
        &Multipart::new()
            .file("image", &obama)
            .text("userid", "before")
            .body(),
    );
    assert_eq!(res.json()["success"], true, "{}", res.text());

    // A body larger than the whole budget can never be served: refused at once.
    let started = Instant::now();
    let mut big = upload_started(port, BUDGET + MIB, BUDGET + MIB);
    let res = read_response(&mut big).unwrap();
    assert_refused(&res, "MEMORY_BUDGET_BYTES", "a body over the whole budget");
    assert!(res.json()["reason"]
        .as_str()
        .unwrap()
        .contains("larger than"));
    // Answered at once; actix closes the connection after its 1 s disconnect timeout.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    let pid = server.pid();
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    let before = vm(pid, "VmRSS:");

    // Two stalled uploads hold half the budget.
    let stalled_at = Instant::now();
    let stalled: Vec<TcpStream> = (0..2)
        .map(|_| upload_started(port, 4 * MIB, 256 << 10))
        .collect();
    std::thread::sleep(Duration::from_millis(300));

    // Twelve large uploads at once: no room for any.
    let attackers: Vec<_> = (0..12)
        .map(|_| {
            std::thread::spawn(move || {
                let t = Instant::now();
                let mut s = upload_started(port, 9 * MIB, 9 * MIB);
                (read_response(&mut s), t.elapsed())
            })
        })
        .collect();

    // Meanwhile an ordinary recognize and a registration get their share.
    let t = Instant::now();
    let res = server.post(
        "/v1/vision/face/recognize",
        &Multipart::new()
            .file("image", &photo("obama_1280x720.jpg"))
            .body(),
    );
    let recognize_took = t.elapsed();
    let json = res.json();
    assert_eq!(json["success"], true, "recognize during the attack: {json}");
    assert_eq!(json["predictions"][0]["userid"], "before", "{json}");
    assert!(
        recognize_took < Duration::from_secs(2),
        "{recognize_took:?}"
    );
    // A request without a body (no Content-Length) needs nothing from the budget.
    let res = harness::raw_request(
        port,
        b"GET /v1/gallery/users HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    assert_eq!(res.status, 200, "{}", res.text());
    let res = server.post(
        "/v1/vision/face/register",
        &Multipart::new()
            .file("image", &photo("obama2.jpg"))
            .text("userid", "during")
            .body(),
    );
    assert_eq!(
        res.json()["success"],
        true,
        "register during the attack: {}",
        res.text()
    );

    for a in attackers {
        let (res, took) = a.join().unwrap();
        let res = res.expect("an answer, not a reset");
        assert_refused(
            &res,
            "MEMORY_BUDGET_BYTES",
            "a 9 MiB upload with 8 MiB free",
        );
        assert!(res.json()["reason"]
            .as_str()
            .unwrap()
            .contains("server busy"));
        // The admission wait (1 s), the answer, actix's 1 s disconnect timeout.
        assert!(took < Duration::from_secs(4), "{took:?}");
    }

    // The stalled uploads are cut at BODY_TIMEOUT, with an answer.
    for mut s in stalled {
        let res = read_response(&mut s).expect("an answer to the stalled upload");
        assert_refused(&res, "BODY_TIMEOUT", "a stalled upload");
    }
    let cut_after = stalled_at.elapsed();
    assert!(
        (Duration::from_secs(3)..Duration::from_secs(7)).contains(&cut_after),
        "{cut_after:?}"
    );

    let peak = vm(pid, "VmHWM:");
    assert!(
        peak <= before + BUDGET + MARGIN,
        "peak {} MiB, {} MiB before the attack, budget {} MiB + margin {} MiB",
        peak / MIB,
        before / MIB,
        BUDGET / MIB,
        MARGIN / MIB
    );

    // Everything given back: a full-size request fits again, and the gallery is whole.
    let res = server.post(
        "/v1/vision/face/recognize",
        &Multipart::new().file("image", &obama).body(),
    );
    assert_eq!(res.json()["predictions"][0]["userid"], "before");
    let list = server
        .post("/v1/vision/face/list", &fields(&[]).body())
        .json();
    assert_eq!(
        list["faces"],
        serde_json::json!(["before", "during"]),
        "{list}"
    );
    eprintln!(
        "resident before {} MiB, peak {} MiB; recognize during the attack {recognize_took:?}; \
         stalled uploads cut after {cut_after:?}",
        before / MIB,
        peak / MIB
    );
}
