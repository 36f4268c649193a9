//! Crash safety: SIGKILL in the middle of a stream of registrations, 20 times over on the
//! same DATA_DIR. After each kill the gallery passes `PRAGMA integrity_check`, every
//! registration that was answered 200 is there with all its samples, and a registration
//! that was cut off is there whole or not at all (two photos per request: never one).

mod common;
#[path = "api/harness.rs"]
mod harness;

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use harness::{Daemon, Multipart};
use rusqlite::Connection;

const REGISTER: &str = "/v1/vision/face/register";
const ROUNDS: u64 = 20;
const WRITERS: usize = 2;
/// Photos per registration: a cut-off registration must show 0 or this many new samples.
const PHOTOS_PER_REQUEST: u64 = 2;

/// A small face photo (obama.jpg scaled to 240 px wide), so a registration is quick.
fn small_photo() -> Vec<u8> {
    let img = image::load_from_memory(&common::photo_bytes("obama.jpg")).unwrap();
    let small = img.resize(240, 240, image::imageops::FilterType::Triangle);
    let mut out = Cursor::new(Vec::new());
    small.write_to(&mut out, image::ImageFormat::Jpeg).unwrap();
    out.into_inner()
}

/// Samples per userid, read straight from the file after checking its integrity.
fn samples_on_disk(db: &Path) -> BTreeMap<String, u64> {
    let conn = Connection::open(db).unwrap();
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let fk: i64 = conn
        .query_row("SELECT count(*) FROM pragma_foreign_key_check", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(fk, 0, "samples without a user");
    let mut stmt = conn
        .prepare(
            "SELECT u.userid, count(s.id) FROM users u LEFT JOIN samples s ON s.user_id = u.id
             GROUP BY u.id",
        )
        .unwrap();
    let rows = stmt
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    rows
}

#[test]
fn sigkill_during_registrations_loses_nothing_acknowledged() {
    let photo = small_photo();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let db = data.join("faces.sqlite3");
    let env = [("VISION-FACE", "True"), ("THREADCOUNT", "2")];
    // Acknowledged samples per userid, over all rounds.
    let acked: Mutex<BTreeMap<String, u64>> = Mutex::new(BTreeMap::new());
    let mut total_acked_requests = 0;
    let mut cut_off = 0;
    let mut cut_off_stored = 0;

    for round in 0..ROUNDS {
        let daemon = Daemon::start(&data, &env);
        let stop = AtomicBool::new(false);
        // Each writer registers its own users, each twice (added, then updated).
        let in_flight: Vec<Option<String>> = std::thread::scope(|scope| {
            let writers: Vec<_> = (0..WRITERS)
                .map(|w| {
                    let (daemon, photo, acked, stop) = (&daemon, &photo, &acked, &stop);
                    scope.spawn(move || {
                        let mut n = 0u64;
                        loop {
                            if stop.load(Ordering::SeqCst) {
                                return (None, n);
                            }
                            let userid = format!("r{round}-w{w}-u{}", n / 2);
                            let form = Multipart::new()
                                .file("image1", photo)
                                .file("image2", photo)
                                .text("userid", &userid);
                            match daemon.request("POST", REGISTER, &form.body()) {
                                Ok(res) if res.status == 200 => {
                                    *acked.lock().unwrap().entry(userid).or_default() +=
                                        PHOTOS_PER_REQUEST;
                                    n += 1;
                                }
                                Ok(res) => {
                                    panic!("register {userid}: {} {}", res.status, res.text())
                                }
                                // Killed under it: this one may or may not have been stored.
                                Err(_) => return (Some(userid), n),
                            }
                        }
                    })
                })
                .collect();
            // A different moment in each round: from 0.1 s to about 1.9 s in.
            std::thread::sleep(Duration::from_millis(100 + (round * 389) % 1800));
            let daemon_pid = daemon.pid();
            let killed = std::process::Command::new("kill")
                .args(["-KILL", &daemon_pid.to_string()])
                .status()
                .unwrap();
            assert!(killed.success());
            stop.store(true, Ordering::SeqCst);
            writers
                .into_iter()
                .map(|h| {
                    let (cut, n) = h.join().unwrap();
                    total_acked_requests += n;
                    cut
                })
                .collect()
        });
        drop(daemon);
        cut_off += in_flight.iter().flatten().count();

        // The file as the next start will find it.
        let on_disk = samples_on_disk(&db);
        let mut known = acked.lock().unwrap();
        for (userid, want) in known.iter() {
            let got = on_disk.get(userid).copied().unwrap_or(0);
            let extra = got.checked_sub(*want).unwrap_or_else(|| {
                panic!("round {round}: {userid} has {got} samples, {want} were acknowledged")
            });
            let cut = in_flight.iter().flatten().any(|u| u == userid);
            assert!(
                extra == 0 || (cut && extra == PHOTOS_PER_REQUEST),
                "round {round}: {userid} has {got} samples, {want} acknowledged"
            );
        }
        for (userid, got) in &on_disk {
            if !known.contains_key(userid) {
                // Only a cut-off first registration may be there unacknowledged, and whole.
                let cut = in_flight.iter().flatten().any(|u| u == userid);
                assert!(
                    cut && *got == PHOTOS_PER_REQUEST,
                    "round {round}: {userid} ({got} samples) was never acknowledged"
                );
            }
        }
        // The cut-off registrations that made it in count as stored from now on.
        for userid in in_flight.iter().flatten() {
            if let Some(got) = on_disk.get(userid) {
                if known.insert(userid.clone(), *got) != Some(*got) {
                    cut_off_stored += 1;
                }
            }
        }
    }
    // A last start: the daemon opens what 20 kills left, and reports the same numbers.
    let daemon = Daemon::start(&data, &env);
    let status = daemon.status();
    let acked = acked.lock().unwrap();
    assert_eq!(status["users"].as_u64(), Some(acked.len() as u64));
    assert_eq!(
        status["samples"].as_u64(),
        Some(acked.values().sum::<u64>())
    );
    eprintln!(
        "{ROUNDS} SIGKILLs: {total_acked_requests} registrations acknowledged, {cut_off} cut off \
         ({cut_off_stored} of them stored whole, the others not at all), {} users and {} samples intact",
        acked.len(),
        acked.values().sum::<u64>()
    );
    assert!(
        total_acked_requests >= ROUNDS / 2,
        "too few registrations to mean anything"
    );
}
