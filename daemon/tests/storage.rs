//! A full or read-only DATA_DIR: writes get a clear error (500 `error occured on the server`
//! with a `reason` naming the problem), recognition goes on, and nothing is damaged.
//!
//! Both cases need a small file system of their own: a tmpfs mounted for the test (we run
//! as root in CI; root ignores permissions, so chmod cannot make a read-only directory).
//! Where mounting is not allowed the test says so and passes without checking.

mod common;
#[path = "api/harness.rs"]
mod harness;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use harness::{fields, Daemon, Multipart, Response};
use serde_json::{json, Value};

const RECOGNIZE: &str = "/v1/vision/face/recognize";
const REGISTER: &str = "/v1/vision/face/register";
const DELETE: &str = "/v1/vision/face/delete";
const LIST: &str = "/v1/vision/face/list";
const RESTORE: &str = "/v1/restore";
const FACES_ON: (&str, &str) = ("VISION-FACE", "True");

/// A tmpfs mounted on a temp directory, unmounted on drop.
struct Tmpfs {
    dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Option<Tmpfs> {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("mnt");
        std::fs::create_dir(&dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            eprintln!("SKIPPED: cannot mount a tmpfs here (not root?); storage errors unchecked");
            return None;
        }
        Some(Tmpfs { dir, _tmp: tmp })
    }

    fn remount(&self, mode: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(&self.dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "remount {mode}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

fn register(d: &Daemon, userid: &str, photo: &str) -> Response {
    let form = Multipart::new()
        .file("image", &common::photo_bytes(photo))
        .text("userid", userid);
    d.post(REGISTER, &form.body())
}

fn recognized(d: &Daemon) -> Vec<String> {
    let form = Multipart::new().file("image", &common::photo_bytes("obama2.jpg"));
    let res = d.post(RECOGNIZE, &form.body());
    assert_eq!(res.status, 200, "{}", res.text());
    res.json()["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["userid"].as_str().unwrap().to_owned())
        .collect()
}

fn assert_storage_error(res: &Response, says: &str) {
    assert_eq!(res.status, 500, "{}", res.text());
    let body: Value = res.json();
    assert_eq!(body["success"], json!(false));
    assert_eq!(body["error"], json!("error occured on the server"));
    assert_eq!(body["duration"], json!(0));
    let reason = body["reason"].as_str().unwrap_or_default();
    assert!(reason.contains(says), "{reason}");
}

/// Fills the file system with one file until it is full; returns the file.
fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let block = vec![0u8; 4096];
    while f.write_all(&block).is_ok() {}
    let _ = f.sync_all();
    path
}

#[test]
fn a_full_data_dir_refuses_writes_and_keeps_recognizing() {
    let Some(fs) = Tmpfs::mount("4m") else {
        return;
    };
    // The mount point is the data dir: the harness's log file goes next to it, outside.
    let data = fs.dir.clone();
    let d = Daemon::start(&data, &[FACES_ON]);
    assert_eq!(register(&d, "obama", "obama.jpg").status, 200);
    let before = d.post(LIST, &fields(&[]).body()).text();

    let filler = fill(&fs.dir);
    for photo in ["biden.jpg", "obama3.jpg"] {
        assert_storage_error(&register(&d, "someone", photo), "full");
    }
    assert_eq!(recognized(&d), ["obama"]);
    assert_eq!(d.post(LIST, &fields(&[]).body()).text(), before);

    // Space again: writes work again, nothing was half-written meanwhile.
    std::fs::remove_file(filler).unwrap();
    assert_eq!(register(&d, "biden", "biden.jpg").status, 200);
    let status = d.status();
    assert_eq!(
        (status["users"].as_u64(), status["samples"].as_u64()),
        (Some(2), Some(2))
    );
    drop(d);
    let conn = rusqlite::Connection::open(data.join("faces.sqlite3")).unwrap();
    let ok: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(ok, "ok");
}

/// A daemon on a tmpfs data dir of its own, with obama registered; `None` where mounting is
/// not allowed.
fn obama_registered(env: &[(&str, &str)]) -> Option<(Tmpfs, Daemon)> {
    let fs = Tmpfs::mount("16m")?;
    let d = Daemon::start(&fs.dir, env);
    assert_eq!(register(&d, "obama", "obama.jpg").status, 200);
    Some((fs, d))
}

/// Turns `fs` read-only and starts a daemon on it: it must say so, recognize obama and refuse
/// a registration.
fn start_read_only(fs: &Tmpfs, env: &[(&str, &str)]) -> Daemon {
    fs.remount("ro");
    let d = Daemon::start(&fs.dir, env);
    assert!(
        d.log_text().contains("opening it read-only"),
        "{}",
        d.log_text()
    );
    assert_eq!(recognized(&d), ["obama"]);
    assert_storage_error(&register(&d, "biden", "biden.jpg"), "read-only");
    d
}

#[test]
fn a_read_only_data_dir_serves_recognition_and_refuses_writes() {
    let env = [FACES_ON, ("ADMIN-KEY", "adm")];
    let Some((fs, d)) = obama_registered(&env) else {
        return;
    };
    let data = fs.dir.clone();
    let backup = d
        .post("/v1/backup", &fields(&[("admin_key", "adm")]).body())
        .body;
    // A clean stop closes the database (nothing open for writing), then the file system
    // turns read-only, as an SD card does after errors.
    assert!(d.terminate().success());
    for left in ["faces.sqlite3-wal", "faces.sqlite3-shm"] {
        assert!(!data.join(left).exists(), "a clean stop left {left} behind");
    }
    let d = start_read_only(&fs, &env);
    assert_storage_error(
        &d.post(DELETE, &fields(&[("userid", "obama")]).body()),
        "read-only",
    );
    let restore = Multipart::new()
        .file("file", &backup)
        .text("admin_key", "adm")
        .body();
    assert_storage_error(&d.post(RESTORE, &restore), "read-only");
    // A backup needs a temp file in the data dir.
    let res = d.post("/v1/backup", &fields(&[("admin_key", "adm")]).body());
    assert_storage_error(&res, "data directory");
    assert_eq!(recognized(&d), ["obama"]);
    assert_eq!(
        d.post(LIST, &fields(&[]).body()).json()["faces"],
        json!(["obama"])
    );
    drop(d);
    fs.remount("rw");
}

#[test]
fn a_read_only_data_dir_after_a_crash_still_has_the_last_registrations() {
    let Some((fs, d)) = obama_registered(&[FACES_ON]) else {
        return;
    };
    // A crash: the registration is committed, but only to the WAL file.
    d.kill();
    let wal = fs.dir.join("faces.sqlite3-wal");
    assert!(std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0));
    let d = start_read_only(&fs, &[FACES_ON]);
    assert_eq!(recognized(&d), ["obama"]);
    drop(d);
    fs.remount("rw");
}

#[test]
fn a_new_gallery_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("new/data");
    let gallery = deepstackd::gallery::Gallery::open(&data).unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&data), 0o700);
    for file in ["faces.sqlite3", "faces.sqlite3-wal", "faces.sqlite3-shm"] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    drop(gallery);
}
