//! Re-embedding a gallery of 1,000 samples with the real daemon: recognition goes on during
//! it, a SIGKILL in the middle loses nothing, the next run resumes, and at the end every
//! userid and sample is still there with embeddings from the loaded model.
//!
//! The gallery is made of real registrations (three people) plus copies of their stored
//! samples under other userids, brought in through /v1/restore of an edited backup.

mod common;
#[path = "api/harness.rs"]
mod harness;

use std::path::Path;
use std::time::{Duration, Instant};

use harness::routes::*;
use harness::{fields, Body, Daemon, Multipart};
use rusqlite::Connection;
use serde_json::{json, Value};

const ADMIN: &str = "adm1n";
const ENV: &[(&str, &str)] = &[("VISION-FACE", "True"), ("ADMIN-KEY", ADMIN)];
const SAMPLES: i64 = 1000;

fn register(d: &Daemon, userid: &str, photo: &str) {
    let form = Multipart::new()
        .file("image", &common::photo_bytes(photo))
        .text("userid", userid);
    let res = d.post(REGISTER, &form.body());
    assert_eq!(res.status, 200, "{}", res.text());
}

fn recognized(d: &Daemon, photo: &str) -> (String, f64) {
    let form = Multipart::new().file("image", &common::photo_bytes(photo));
    let body = d.post(RECOGNIZE, &form.body()).json();
    let p = &body["predictions"][0];
    (
        p["userid"].as_str().unwrap_or_default().to_owned(),
        p["confidence"].as_f64().unwrap_or_default(),
    )
}

fn users(d: &Daemon) -> Value {
    let res = d.get(GALLERY_USERS);
    assert_eq!(res.status, 200, "{}", res.text());
    // The dates of the newest sample do not change; keep userids and counts.
    let list: Vec<Value> = res.json()["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| json!([u["userid"], u["samples"], u["newest_sample"]]))
        .collect();
    json!(list)
}

fn backup(d: &Daemon, dir: &Path, name: &str) -> Connection {
    let res = d.post(BACKUP, &fields(&[("admin_key", ADMIN)]).body());
    assert_eq!(res.status, 200);
    let path = dir.join(name);
    std::fs::write(&path, &res.body).unwrap();
    Connection::open(&path).unwrap()
}

fn reembed(d: &Daemon) -> harness::Response {
    d.call("POST", REEMBED, &[("X-Admin-Key", ADMIN)], &Body::Empty)
}

fn progress(d: &Daemon) -> Value {
    d.status()["reembed"].clone()
}

fn embedding_of(conn: &Connection, userid: &str) -> Vec<f32> {
    let blob: Vec<u8> = conn
        .query_row(
            "SELECT s.embedding FROM samples s JOIN users u ON u.id = s.user_id
             WHERE u.userid = ?1",
            [userid],
            |r| r.get(0),
        )
        .unwrap();
    blob.chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

#[test]
fn reembedding_1000_samples_survives_a_kill_and_keeps_every_userid() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let d = Daemon::start(&data, ENV);
    let people = [
        ("obama", "obama.jpg", "obama2.jpg"),
        ("biden", "biden.jpg", "biden.jpg"),
        ("collins", "astronaut.png", "astronaut.png"),
    ];
    for (userid, photo, _) in people {
        register(&d, userid, photo);
    }

    // Copies of the three stored samples under 'person-NNN' bring the gallery to 1,000;
    // every sample claims an old model, so all of them must be redone.
    let conn = backup(&d, tmp.path(), "grown.sqlite3");
    conn.execute_batch(&format!(
        "WITH RECURSIVE n(k) AS (SELECT 0 UNION ALL SELECT k + 1 FROM n WHERE k < {})
         INSERT INTO users(userid, created_at)
             SELECT printf('person-%03d', k), 0 FROM n;
         INSERT INTO samples(user_id, embedding, model, crop, source, det_score, added_at)
             SELECT u.id, s.embedding, s.model, s.crop, 'copy', s.det_score, 0
             FROM users u JOIN samples s
               ON s.user_id = 1 + (CAST(substr(u.userid, 8) AS INTEGER) % 3)
             WHERE u.userid LIKE 'person-%';
         INSERT INTO samples(user_id, embedding, model, crop, source, det_score, added_at)
             SELECT u.id, s.embedding, s.model, s.crop, 'copy2', s.det_score, 0
             FROM users u JOIN samples s
               ON s.user_id = 1 + (CAST(substr(u.userid, 8) AS INTEGER) % 3)
             WHERE u.userid LIKE 'person-%'
             AND CAST(substr(u.userid, 8) AS INTEGER) < {};
         UPDATE samples SET model = 'old-model';",
        // 3 real + 499 users with one copy + 498 of them with a second = 1,000.
        498,
        498
    ))
    .unwrap();
    let total: i64 = conn
        .query_row("SELECT count(*) FROM samples", [], |r| r.get(0))
        .unwrap();
    assert_eq!(total, SAMPLES);
    let old_obama = embedding_of(&conn, "obama");
    drop(conn);
    let grown = std::fs::read(tmp.path().join("grown.sqlite3")).unwrap();
    let form = Multipart::new()
        .file("file", &grown)
        .text("admin_key", ADMIN);
    assert_eq!(d.post(RESTORE, &form.body()).json()["success"], json!(true));
    assert_eq!(d.status()["samples"], json!(SAMPLES));
    let before = users(&d);
    assert_eq!(before.as_array().unwrap().len(), 502);

    // Admin key only; one run at a time.
    let res = d.call("POST", REEMBED, &[], &Body::Empty);
    assert_eq!(res.status, 401, "{}", res.text());
    let started = Instant::now();
    let res = reembed(&d);
    assert_eq!(res.status, 202, "{}", res.text());
    let body = res.json();
    assert_eq!(body["reembed"]["state"], json!("running"));
    assert_eq!(body["reembed"]["total"], json!(SAMPLES));
    let res = reembed(&d);
    assert_eq!(
        (res.status, res.text()),
        (
            409,
            r#"{"success":false,"error":"re-embedding already running","duration":0}"#.into()
        )
    );

    // Recognition is answered meanwhile.
    assert_eq!(recognized(&d, "obama2.jpg").0, "obama");

    // Kill it in the middle.
    let mut seen = 0;
    while seen < 300 {
        let p = progress(&d);
        assert_eq!(
            p["state"],
            json!("running"),
            "finished before the kill: {p}"
        );
        seen = p["done"].as_i64().unwrap();
        assert!(started.elapsed() < Duration::from_secs(600), "{p}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let first_run = started.elapsed();
    d.kill();

    // After the restart: nothing lost, the old embeddings serve, the staged work is kept.
    let d = Daemon::start(&data, ENV);
    let p = progress(&d);
    assert_eq!(p["state"], json!("interrupted"), "{p}");
    assert!(p["done"].as_i64().unwrap() >= seen, "{p}");
    assert_eq!(d.status()["samples"], json!(SAMPLES));
    assert_eq!(users(&d), before);
    assert_eq!(recognized(&d, "obama2.jpg").0, "obama");

    // The next run resumes where the first stopped.
    let resumed = Instant::now();
    let res = reembed(&d);
    assert_eq!(res.status, 202, "{}", res.text());
    let resumed_from = res.json()["reembed"]["done"].as_i64().unwrap();
    assert!(resumed_from >= seen, "resumed from {resumed_from}");
    let p = loop {
        let p = progress(&d);
        if p["state"] != json!("running") {
            break p;
        }
        assert!(resumed.elapsed() < Duration::from_secs(900), "{p}");
        std::thread::sleep(Duration::from_millis(200));
    };
    let second_run = resumed.elapsed();
    assert_eq!(p["state"], json!("done"), "{p}");
    assert_eq!(
        (p["done"].as_i64(), p["failed"].as_i64()),
        (Some(SAMPLES), Some(0))
    );
    eprintln!(
        "re-embedding {SAMPLES} samples: {seen} in {:.1} s before the kill, the remaining {} in {:.1} s after the restart ({:.1} ms a sample)",
        first_run.as_secs_f64(),
        SAMPLES - resumed_from,
        second_run.as_secs_f64(),
        second_run.as_secs_f64() * 1000.0 / (SAMPLES - resumed_from) as f64
    );

    // Every userid and sample is there, every embedding is the loaded model's, nothing is
    // left staged, and the people are recognized as before.
    assert_eq!(users(&d), before);
    let model = d.status()["models"][1]["sha256"]
        .as_str()
        .unwrap()
        .to_owned();
    let conn = backup(&d, tmp.path(), "after.sqlite3");
    let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    assert_eq!(count("SELECT count(*) FROM samples"), SAMPLES);
    assert_eq!(
        conn.query_row(
            "SELECT count(*) FROM samples WHERE model != ?1",
            [&model],
            |r| r.get::<_, i64>(0)
        )
        .unwrap(),
        0
    );
    assert_eq!(count("SELECT count(*) FROM reembed_staging"), 0);
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    // The embedding really was recomputed (from the JPEG crop, so not bit-identical) and
    // is still the same face.
    let new_obama = embedding_of(&conn, "obama");
    assert_ne!(new_obama, old_obama);
    let cosine: f32 = new_obama.iter().zip(&old_obama).map(|(a, b)| a * b).sum();
    assert!(cosine > 0.9, "cosine {cosine}");
    for (userid, _, probe) in people {
        let (who, confidence) = recognized(&d, probe);
        assert_eq!(who, userid);
        assert!(confidence > 0.67, "{userid}: {confidence}");
    }
}
