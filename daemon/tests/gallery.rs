//! Gallery storage against real SQLite files in temp dirs.
//!
//! Embeddings are synthetic but real-shaped: random unit vectors in 128 dimensions from a
//! small deterministic PRNG (storage does not care whether a face made them).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use deepstackd::gallery::{
    FaceStore, Gallery, GalleryError, NewSample, RegisterOutcome, EMBEDDING_DIM,
};
use rusqlite::{Connection, OpenFlags};
use sha2::{Digest, Sha256};

/// SplitMix64: tiny, deterministic, good enough for test vectors.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn uniform(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 + 1.0) / (1u64 << 24) as f32
    }

    /// Standard normal (Box-Muller), so unit vectors are uniform on the sphere.
    fn normal(&mut self) -> f32 {
        let (u1, u2) = (self.uniform(), self.uniform());
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    }

    fn unit_vector(&mut self) -> Vec<f32> {
        normalised((0..EMBEDDING_DIM).map(|_| self.normal()).collect())
    }

    /// `v` plus noise, renormalised: "another photo of the same face".
    fn near(&mut self, v: &[f32], noise: f32) -> Vec<f32> {
        normalised(v.iter().map(|x| x + noise * self.normal()).collect())
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }

    /// A sample with a random embedding and a JPEG-looking crop.
    fn sample(&mut self, source: &str) -> NewSample {
        let embedding = self.unit_vector();
        self.sample_with(embedding, source)
    }

    fn sample_with(&mut self, embedding: Vec<f32>, source: &str) -> NewSample {
        let mut crop = vec![0xFF, 0xD8, 0xFF, 0xE0];
        crop.extend(self.bytes(1500));
        crop.extend([0xFF, 0xD9]);
        NewSample {
            embedding,
            model: "sface_2021dec_int8".into(),
            crop,
            source: source.into(),
            det_score: 0.5 + self.uniform() / 2.0,
            quality: None,
            negative: false,
        }
    }
}

fn normalised(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
    v
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

fn open(dir: &Path) -> Gallery {
    Gallery::open(dir).expect("open gallery")
}

/// Hash of everything the gallery stores, read through a separate read-only connection.
fn fingerprint(db: &Path) -> String {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mut hash = Sha256::new();
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    hash.update(version.to_le_bytes());
    for sql in [
        "SELECT key, value FROM meta ORDER BY key",
        "SELECT id, userid, created_at FROM users ORDER BY id",
        "SELECT id, user_id, embedding, model, crop, source, det_score, added_at, negative
         FROM samples ORDER BY id",
        "SELECT name, seq FROM sqlite_sequence ORDER BY name",
    ] {
        let mut stmt = conn.prepare(sql).unwrap();
        let columns = stmt.column_count();
        let mut rows = stmt.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            for i in 0..columns {
                hash.update(format!("{:?}|", row.get_ref(i).unwrap()).as_bytes());
            }
            hash.update(b"\n");
        }
    }
    format!("{:x}", hash.finalize())
}

/// The raw bytes of the database file and its WAL.
fn raw_files(db: &Path) -> Vec<u8> {
    let mut bytes = std::fs::read(db).unwrap();
    let wal = db.with_file_name("faces.sqlite3-wal");
    bytes.extend(std::fs::read(wal).unwrap_or_default());
    bytes
}

fn count(db: &Path, sql: &str) -> i64 {
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn gallery_is_send_and_sync_and_usable_as_a_trait_object() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Gallery>();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn FaceStore> = Arc::new(open(dir.path()));
    assert_eq!(store.stats(), (0, 0));
}

#[test]
fn register_creates_then_appends_and_is_visible_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let gallery = open(dir.path());
    let mut rng = Rng(1);

    let first = rng.sample("image");
    let outcome = gallery.register("alice", vec![first.clone()]).unwrap();
    assert_eq!(outcome, RegisterOutcome::Added);
    assert_eq!(gallery.stats(), (1, 1));
    let hits = gallery.best_matches(&first.embedding, -1.0, usize::MAX);
    assert_eq!(hits.len(), 1);
    assert_eq!(hits[0].0, "alice");
    assert!((hits[0].1 - 1.0).abs() < 1e-5);

    let more = vec![rng.sample("image1"), rng.sample("image2")];
    let probe = more[1].embedding.clone();
    let outcome = gallery.register("alice", more).unwrap();
    assert_eq!(outcome, RegisterOutcome::Updated);
    assert_eq!(
        gallery.stats(),
        (1, 3),
        "samples are appended, not replaced"
    );
    // The template is now the mean of the three: the newest sample counts in it.
    let before = dot(&probe, &first.embedding);
    let after = gallery.best_matches(&probe, -1.0, usize::MAX)[0].1;
    assert!(after > before + 0.1, "{before} -> {after}");

    let sources: Vec<String> = gallery
        .user_samples("alice")
        .unwrap()
        .into_iter()
        .map(|s| s.source)
        .collect();
    assert_eq!(sources, ["image", "image1", "image2"]);
}

#[test]
fn register_rejects_empty_userid_no_samples_and_bad_embeddings() {
    let dir = tempfile::tempdir().unwrap();
    let gallery = open(dir.path());
    let mut rng = Rng(2);

    assert!(matches!(
        gallery.register("", vec![rng.sample("image")]),
        Err(GalleryError::EmptyUserid)
    ));
    assert!(matches!(
        gallery.register("bob", vec![]),
        Err(GalleryError::NoSamples)
    ));
    let bad_embeddings = [
        vec![0.1; 127],
        vec![0.0; EMBEDDING_DIM],
        {
            let mut v = rng.unit_vector();
            v[5] = f32::NAN;
            v
        },
        rng.unit_vector().iter().map(|x| x * 2.0).collect(),
    ];
    for embedding in bad_embeddings {
        let sample = rng.sample_with(embedding, "image");
        assert!(matches!(
            gallery.register("bob", vec![sample]),
            Err(GalleryError::BadEmbedding(_))
        ));
    }
    assert_eq!(gallery.stats(), (0, 0));
    assert!(gallery.list_users().is_empty());
}

#[test]
fn list_is_sorted_bytewise_and_case_sensitive() {
    let dir = tempfile::tempdir().unwrap();
    let gallery = open(dir.path());
    let mut rng = Rng(3);
    for userid in ["Zed", "adam", "Émile", "bob", "Adam", "adam ", "日本"] {
        assert_eq!(
            gallery.register(userid, vec![rng.sample("image")]).unwrap(),
            RegisterOutcome::Added,
            "{userid:?} is its own user"
        );
    }
    let expected = ["Adam", "Zed", "adam", "adam ", "bob", "Émile", "日本"];
    assert_eq!(gallery.list_users(), expected);

    // SQLite's BINARY collation agrees (what DeepStack's list returned).
    let conn = Connection::open(gallery.db_path().unwrap()).unwrap();
    let mut stmt = conn
        .prepare("SELECT userid FROM users ORDER BY userid")
        .unwrap();
    let from_sqlite: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(from_sqlite, expected);
}

#[test]
fn delete_cascades_and_unknown_delete_is_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let gallery = open(dir.path());
    let mut rng = Rng(4);
    let alice = rng.sample("image");
    let alice_probe = alice.embedding.clone();
    gallery
        .register("alice", vec![alice, rng.sample("image2")])
        .unwrap();
    gallery.register("bob", vec![rng.sample("image")]).unwrap();

    assert!(gallery.delete_user("alice").unwrap());
    assert_eq!(gallery.list_users(), ["bob"]);
    assert_eq!(gallery.stats(), (1, 1));
    assert_eq!(
        count(gallery.db_path().unwrap(), "SELECT count(*) FROM samples"),
        1
    );
    assert!(gallery
        .best_matches(&alice_probe, -1.0, usize::MAX)
        .iter()
        .all(|(u, _)| u != "alice"));

    assert!(!gallery.delete_user("alice").unwrap());
    assert!(!gallery.delete_user("nobody").unwrap());
    assert!(!gallery.delete_user("Bob").unwrap(), "case-sensitive");

    let outcome = gallery
        .register("alice", vec![rng.sample("image")])
        .unwrap();
    assert_eq!(
        outcome,
        RegisterOutcome::Added,
        "a deleted user starts over"
    );
    assert_eq!(gallery.stats(), (2, 2));
}

/// The cosine of `query` with the normalised mean of `samples`: a user's template score.
fn template_cosine(query: &[f32], samples: &[&[f32]]) -> f32 {
    let mut sum = vec![0f32; query.len()];
    for e in samples {
        for (s, x) in sum.iter_mut().zip(*e) {
            *s += x;
        }
    }
    dot(query, &normalised(sum))
}

#[test]
fn best_matches_scores_each_user_by_the_mean_of_its_samples() {
    let dir = tempfile::tempdir().unwrap();
    let gallery = open(dir.path());
    let mut rng = Rng(5);
    let mut stored: Vec<(String, Vec<Vec<f32>>)> = Vec::new();
    let centre = rng.unit_vector();
    for u in 0..6 {
        let userid = format!("user{u}");
        let samples: Vec<NewSample> = (0..4)
            .map(|_| {
                let mut s = rng.sample("image");
                if u == 3 {
                    s.embedding = rng.near(&centre, 0.05);
                }
                s
            })
            .collect();
        stored.push((
            userid.clone(),
            samples.iter().map(|s| s.embedding.clone()).collect(),
        ));
        gallery.register(&userid, samples).unwrap();
    }
    // Another photo of user3, whose four photos resemble each other.
    let query = rng.near(&centre, 0.05);
    let hits = gallery.best_matches(&query, -1.0, usize::MAX);

    assert_eq!(hits.len(), 6);
    assert_eq!(hits[0].0, "user3");
    assert!(hits[0].1 > 0.8, "{hits:?}");
    assert!(
        hits.windows(2).all(|w| w[0].1 >= w[1].1),
        "sorted descending"
    );
    for (userid, embeddings) in &stored {
        let refs: Vec<&[f32]> = embeddings.iter().map(Vec::as_slice).collect();
        let expected = template_cosine(&query, &refs);
        let got = hits.iter().find(|(u, _)| u == userid).unwrap().1;
        assert!(
            (got - expected).abs() < 1e-5,
            "{userid}: {got} vs {expected}"
        );
    }
}

#[test]
fn best_matches_on_an_empty_gallery_or_a_malformed_query_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let gallery = open(dir.path());
    let mut rng = Rng(6);
    assert!(gallery
        .best_matches(&rng.unit_vector(), -1.0, usize::MAX)
        .is_empty());
    gallery
        .register("alice", vec![rng.sample("image")])
        .unwrap();
    assert!(gallery
        .best_matches(&[1.0; 64], -1.0, usize::MAX)
        .is_empty());
    assert!(gallery.best_matches(&[], -1.0, usize::MAX).is_empty());
}

#[test]
fn everything_persists_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(7);
    let probe;
    let crop;
    let before;
    {
        let gallery = open(dir.path());
        let sample = rng.sample("image1");
        probe = sample.embedding.clone();
        crop = sample.crop.clone();
        gallery.register("alice", vec![sample]).unwrap();
        gallery
            .register("bob", vec![rng.sample("image"), rng.sample("image")])
            .unwrap();
        gallery
            .register("carol", vec![rng.sample("image")])
            .unwrap();
        gallery.delete_user("carol").unwrap();
        before = fingerprint(gallery.db_path().unwrap());
    }
    let gallery = open(dir.path());
    assert_eq!(gallery.list_users(), ["alice", "bob"]);
    assert_eq!(gallery.stats(), (2, 3));
    let hits = gallery.best_matches(&probe, -1.0, usize::MAX);
    assert_eq!(hits[0].0, "alice");
    assert!((hits[0].1 - 1.0).abs() < 1e-5);
    let info = &gallery.user_samples("alice").unwrap()[0];
    assert_eq!(info.source, "image1");
    assert_eq!(gallery.sample_crop(info.id).unwrap(), Some(crop));
    assert_eq!(fingerprint(gallery.db_path().unwrap()), before);
    assert_eq!(
        gallery.register("bob", vec![rng.sample("image")]).unwrap(),
        RegisterOutcome::Updated
    );
}

#[test]
fn the_database_file_is_in_wal_mode_at_the_current_schema() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("not/yet/there");
    let gallery = open(&data_dir);
    let db = data_dir.join("faces.sqlite3");
    assert_eq!(gallery.db_path().unwrap(), db.as_path());
    let conn = Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 6);
    let format: String = conn
        .query_row("SELECT value FROM meta WHERE key = 'format'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(format, "deepstack-rs-gallery");
}

#[test]
fn a_newer_or_foreign_database_is_refused_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("faces.sqlite3");
    {
        let gallery = open(dir.path());
        gallery
            .register("alice", vec![Rng(16).sample("image")])
            .unwrap();
    }
    let conn = Connection::open(&db).unwrap();
    conn.execute_batch("PRAGMA user_version = 99").unwrap();
    drop(conn);
    let before = std::fs::read(&db).unwrap();
    assert!(matches!(
        Gallery::open(dir.path()),
        Err(GalleryError::TooNew {
            found: 99,
            supported: 6
        })
    ));
    assert_eq!(std::fs::read(&db).unwrap(), before);

    let foreign_dir = tempfile::tempdir().unwrap();
    let foreign = foreign_dir.path().join("faces.sqlite3");
    std::fs::write(
        &foreign,
        sqlite_file("CREATE TABLE t(x); INSERT INTO t VALUES (1);"),
    )
    .unwrap();
    let before = std::fs::read(&foreign).unwrap();
    assert!(matches!(
        Gallery::open(foreign_dir.path()),
        Err(GalleryError::Corrupt(_))
    ));
    assert_eq!(std::fs::read(&foreign).unwrap(), before);
}

#[test]
fn a_failing_registration_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(8);
    let gallery = open(dir.path());
    gallery.register("bob", vec![rng.sample("image")]).unwrap();
    let before = fingerprint(gallery.db_path().unwrap());

    // The second sample fails after the first one was inserted into the transaction.
    for userid in ["alice", "bob"] {
        let samples = vec![
            rng.sample("image1"),
            rng.sample_with(vec![0.5; EMBEDDING_DIM - 1], "image2"),
            rng.sample("image3"),
        ];
        let result = gallery.register(userid, samples);
        assert!(
            matches!(result, Err(GalleryError::BadEmbedding(_))),
            "{result:?}"
        );
        assert_eq!(gallery.list_users(), ["bob"]);
        assert_eq!(gallery.stats(), (1, 1));
        assert_eq!(fingerprint(gallery.db_path().unwrap()), before);
    }
    drop(gallery);
    let gallery = open(dir.path());
    assert_eq!(gallery.stats(), (1, 1));
    assert_eq!(fingerprint(gallery.db_path().unwrap()), before);
}

#[test]
fn crops_and_sample_metadata_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let gallery = open(dir.path());
    let mut rng = Rng(9);
    let samples = vec![rng.sample("image1"), rng.sample("photo")];
    let expected = samples.clone();
    gallery.register("alice", samples).unwrap();

    let infos = gallery.user_samples("alice").unwrap();
    assert_eq!(infos.len(), 2);
    for (info, sample) in infos.iter().zip(&expected) {
        assert_eq!(info.source, sample.source);
        assert_eq!(info.model, sample.model);
        assert_eq!(info.det_score, sample.det_score);
        assert!(info.added_at > 1_600_000_000_000, "unix ms");
        assert_eq!(
            gallery.sample_crop(info.id).unwrap().as_ref(),
            Some(&sample.crop)
        );
    }
    assert_eq!(gallery.sample_crop(9999).unwrap(), None);
    assert!(gallery.user_samples("nobody").unwrap().is_empty());

    // Ids are never reused, so a cached crop cannot show someone else after a delete.
    gallery.delete_user("alice").unwrap();
    assert_eq!(gallery.sample_crop(infos[1].id).unwrap(), None);
    gallery.register("bob", vec![rng.sample("image")]).unwrap();
    assert!(gallery.user_samples("bob").unwrap()[0].id > infos[1].id);
}

#[test]
fn backups_taken_while_registering_restore_consistent_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let gallery = Arc::new(open(&dir.path().join("live")));
    let done = Arc::new(AtomicBool::new(false));
    let writer = {
        let gallery = Arc::clone(&gallery);
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let mut rng = Rng(10);
            let mut i = 0;
            // Every registration stores two samples: a snapshot holding an odd number of
            // samples (half a registration) would be inconsistent.
            while !done.load(Ordering::Relaxed) || i < 20 {
                let samples = vec![rng.sample("image1"), rng.sample("image2")];
                gallery.register(&format!("w{i:04}"), samples).unwrap();
                i += 1;
            }
            i
        })
    };

    let mut snapshots = Vec::new();
    for _ in 0..5 {
        snapshots.push(gallery.backup_bytes().unwrap());
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    done.store(true, Ordering::Relaxed);
    let registered = writer.join().unwrap();
    assert_eq!(gallery.stats(), (registered, 2 * registered));

    for (n, bytes) in snapshots.iter().enumerate() {
        let fresh = open(&dir.path().join(format!("fresh{n}")));
        fresh.restore_from_bytes(bytes).unwrap();
        let (users, samples) = fresh.stats();
        assert_eq!(samples, 2 * users, "snapshot {n} holds half a registration");
        let expected: Vec<String> = (0..users).map(|i| format!("w{i:04}")).collect();
        assert_eq!(fresh.list_users(), expected, "snapshot {n} is a prefix");
    }

    let last = gallery.backup_bytes().unwrap();
    let fresh = open(&dir.path().join("final"));
    fresh.restore_from_bytes(&last).unwrap();
    assert_eq!(fresh.list_users(), gallery.list_users());
    assert_eq!(fresh.stats(), gallery.stats());
    assert_eq!(
        fingerprint(fresh.db_path().unwrap()),
        fingerprint(gallery.db_path().unwrap())
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("live"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".faces-tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_backup_file_is_one_self_contained_sqlite_file() {
    let dir = tempfile::tempdir().unwrap();
    let gallery = open(&dir.path().join("live"));
    let mut rng = Rng(11);
    gallery
        .register("alice", vec![rng.sample("image")])
        .unwrap();
    let dest = dir.path().join("Backup_1.backup");
    std::fs::write(&dest, gallery.backup_bytes().unwrap()).unwrap();

    let bytes = std::fs::read(&dest).unwrap();
    assert!(bytes.starts_with(b"SQLite format 3\0"));
    assert_eq!((bytes[18], bytes[19]), (1, 1), "rollback journal, not WAL");
    assert!(!dir.path().join("Backup_1.backup-wal").exists());
    assert_eq!(count(&dest, "SELECT count(*) FROM samples"), 1);
    assert_eq!(fingerprint(&dest), fingerprint(gallery.db_path().unwrap()));
}

#[test]
fn restore_replaces_the_gallery_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(12);
    let source = open(&dir.path().join("a"));
    let alice = rng.sample("image");
    let alice_probe = alice.embedding.clone();
    source.register("alice", vec![alice]).unwrap();
    source
        .register("bob", vec![rng.sample("image"), rng.sample("image")])
        .unwrap();
    let backup = source.backup_bytes().unwrap();

    let target_dir = dir.path().join("b");
    let target = open(&target_dir);
    for _ in 0..5 {
        target.register("carol", vec![rng.sample("image")]).unwrap();
    }
    target.restore_from_bytes(&backup).unwrap();
    assert_eq!(target.list_users(), ["alice", "bob"]);
    assert_eq!(target.stats(), (2, 3));
    assert_eq!(
        target.best_matches(&alice_probe, -1.0, usize::MAX)[0].0,
        "alice"
    );
    assert_eq!(
        target.register("carol", vec![rng.sample("image")]).unwrap(),
        RegisterOutcome::Added
    );
    drop(target);

    let target = open(&target_dir);
    assert_eq!(target.list_users(), ["alice", "bob", "carol"]);
    assert_eq!(target.stats(), (3, 4));
    assert_eq!(
        target.best_matches(&alice_probe, -1.0, usize::MAX)[0].0,
        "alice"
    );
}

#[test]
fn restore_accepts_a_plain_copy_of_the_database_file() {
    // A user may copy faces.sqlite3 itself as a backup: its header says WAL.
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(13);
    let source_dir = dir.path().join("a");
    {
        let source = open(&source_dir);
        source.register("alice", vec![rng.sample("image")]).unwrap();
    }
    let bytes = std::fs::read(source_dir.join("faces.sqlite3")).unwrap();
    assert_eq!((bytes[18], bytes[19]), (2, 2), "a WAL-mode file");

    let target = open(&dir.path().join("b"));
    target.restore_from_bytes(&bytes).unwrap();
    assert_eq!(target.list_users(), ["alice"]);
}

/// Builds an SQLite file with `setup` in a scratch dir and returns its bytes.
fn sqlite_file(setup: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.sqlite3");
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(setup).unwrap();
    drop(conn);
    std::fs::read(&path).unwrap()
}

/// A real backup, modified through SQL.
fn altered_backup(backup: &[u8], sql: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("b.sqlite3");
    std::fs::write(&path, backup).unwrap();
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(sql).unwrap();
    drop(conn);
    std::fs::read(&path).unwrap()
}

#[test]
fn invalid_backups_are_refused_and_leave_the_gallery_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = Rng(14);
    let gallery = open(dir.path());
    for u in 0..10 {
        let samples = (0..3).map(|_| rng.sample("image")).collect();
        gallery.register(&format!("user{u}"), samples).unwrap();
    }
    let backup = gallery.backup_bytes().unwrap();
    assert!(
        backup.len() > 8 * 4096,
        "several pages, so truncation bites"
    );

    let mut header_only = b"SQLite format 3\0".to_vec();
    header_only.resize(4096, 0);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("garbage", rng.bytes(10_000)),
        ("a JPEG", rng.sample("image").crop),
        ("an SQLite header and zeros", header_only),
        ("truncated to half", backup[..backup.len() / 2].to_vec()),
        ("truncated to one page", backup[..4096].to_vec()),
        ("truncated to 50 bytes", backup[..50].to_vec()),
        (
            "some other SQLite database",
            sqlite_file("CREATE TABLE users(id INTEGER PRIMARY KEY, userid TEXT); INSERT INTO users VALUES (1, 'x');"),
        ),
        (
            "a newer schema",
            altered_backup(&backup, "PRAGMA user_version = 99;"),
        ),
        (
            "no format marker",
            altered_backup(&backup, "DELETE FROM meta;"),
        ),
        (
            "embeddings of the wrong size",
            sqlite_file(
                "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);
                 INSERT INTO meta VALUES ('format', 'deepstack-rs-gallery');
                 CREATE TABLE users(id INTEGER PRIMARY KEY, userid TEXT, created_at INTEGER);
                 CREATE TABLE samples(id INTEGER PRIMARY KEY, user_id INTEGER, embedding BLOB,
                     model TEXT, crop BLOB, source TEXT, det_score REAL, added_at INTEGER);
                 INSERT INTO users VALUES (1, 'mallory', 0);
                 INSERT INTO samples VALUES (1, 1, x'00112233', 'm', x'', 'image', 0.9, 0);
                 PRAGMA user_version = 1;",
            ),
        ),
        (
            "duplicate userids",
            sqlite_file(&format!(
                "CREATE TABLE meta(key TEXT PRIMARY KEY, value TEXT);
                 INSERT INTO meta VALUES ('format', 'deepstack-rs-gallery');
                 CREATE TABLE users(id INTEGER PRIMARY KEY, userid TEXT, created_at INTEGER);
                 CREATE TABLE samples(id INTEGER PRIMARY KEY, user_id INTEGER, embedding BLOB,
                     model TEXT, crop BLOB, source TEXT, det_score REAL, added_at INTEGER);
                 INSERT INTO users VALUES (1, 'twin', 0), (2, 'twin', 0);
                 INSERT INTO samples VALUES (1, 1, x'{}', 'm', x'', 'image', 0.9, 0);
                 PRAGMA user_version = 1;",
                "00".repeat(EMBEDDING_DIM * 4)
            )),
        ),
    ];

    let users = gallery.list_users();
    let stats = gallery.stats();
    let content = fingerprint(gallery.db_path().unwrap());
    let raw = raw_files(gallery.db_path().unwrap());
    for (name, bytes) in cases {
        let result = gallery.restore_from_bytes(&bytes);
        eprintln!("{name}: {result:?}");
        assert!(
            matches!(result, Err(GalleryError::InvalidBackup(_))),
            "{name}: {result:?}"
        );
        assert_eq!(gallery.list_users(), users, "{name}");
        assert_eq!(gallery.stats(), stats, "{name}");
        assert_eq!(fingerprint(gallery.db_path().unwrap()), content, "{name}");
        assert!(
            raw_files(gallery.db_path().unwrap()) == raw,
            "{name}: file bytes changed"
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".faces-tmp-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // Still fully working, and a good backup still restores.
    gallery
        .register("after", vec![rng.sample("image")])
        .unwrap();
    gallery.restore_from_bytes(&backup).unwrap();
    assert_eq!(gallery.list_users(), users);
    assert_eq!(gallery.stats(), stats);
}

#[test]
fn concurrent_registrations_lose_nothing() {
    const THREADS: usize = 4;
    const PER_THREAD: usize = 50;
    const USERS: usize = 10;
    let dir = tempfile::tempdir().unwrap();
    let gallery = Arc::new(open(dir.path()));

    let reader = {
        let gallery = Arc::clone(&gallery);
        std::thread::spawn(move || {
            let mut rng = Rng(99);
            let mut queries = 0;
            while gallery.stats().1 < THREADS * PER_THREAD {
                let hits = gallery.best_matches(&rng.unit_vector(), -1.0, usize::MAX);
                assert!(hits.len() <= USERS);
                queries += 1;
            }
            queries
        })
    };
    let writers: Vec<_> = (0..THREADS)
        .map(|t| {
            let gallery = Arc::clone(&gallery);
            std::thread::spawn(move || {
                let mut rng = Rng(100 + t as u64);
                let mut added = 0;
                for i in 0..PER_THREAD {
                    // Threads share users, so creating a user races too.
                    let userid = format!("user{}", (t + i) % USERS);
                    let sample = rng.sample(&format!("t{t}i{i}"));
                    if gallery.register(&userid, vec![sample]).unwrap() == RegisterOutcome::Added {
                        added += 1;
                    }
                }
                added
            })
        })
        .collect();
    let added: usize = writers.into_iter().map(|w| w.join().unwrap()).sum();
    reader.join().unwrap();

    assert_eq!(added, USERS, "each user created exactly once");
    assert_eq!(gallery.stats(), (USERS, THREADS * PER_THREAD));
    for u in 0..USERS {
        let samples = gallery.user_samples(&format!("user{u}")).unwrap();
        assert_eq!(samples.len(), THREADS * PER_THREAD / USERS);
    }
    drop(gallery);
    let gallery = open(dir.path());
    assert_eq!(gallery.stats(), (USERS, THREADS * PER_THREAD));
    assert_eq!(
        count(
            gallery.db_path().unwrap(),
            "SELECT count(DISTINCT source) FROM samples"
        ),
        (THREADS * PER_THREAD) as i64
    );
}

/// The index keeps each user's template as a running sum: after registrations, single
/// sample deletions, a merge and a reopen (the index rebuilt from disk), answers must be what
/// a plain scan of every stored sample gives, for any threshold and any number of users asked
/// for. Clustered data (each user's samples near its own centre, some users near each other)
/// makes close scores, where an error would change the order.
#[test]
fn best_matches_equals_an_exact_scan_of_every_sample() {
    let dir = tempfile::tempdir().unwrap();
    let mut gallery = open(dir.path());
    let mut rng = Rng(99);
    let mut stored: Vec<(String, Vec<f32>)> = Vec::new();
    let centres: Vec<Vec<f32>> = (0..40).map(|_| rng.unit_vector()).collect();
    for (u, centre) in centres.iter().enumerate() {
        // Users 2k and 2k+1 share most of their centre: look-alikes.
        let centre = if u % 2 == 1 {
            mix(&centres[u - 1], centre, 0.25)
        } else {
            centre.clone()
        };
        let samples: Vec<NewSample> = (0..12)
            .map(|_| {
                let e = mix(&centre, &rng.unit_vector(), 0.45);
                stored.push((format!("user{u:02}"), e.clone()));
                bare_sample(e)
            })
            .collect();
        gallery.register(&format!("user{u:02}"), samples).unwrap();
    }
    let check = |gallery: &Gallery, stored: &[(String, Vec<f32>)], rng: &mut Rng, when: &str| {
        for q in 0..60 {
            let query = mix(&centres[q % 40], &rng.unit_vector(), 0.5);
            let mut by_user: std::collections::BTreeMap<&str, Vec<&[f32]>> = Default::default();
            for (user, e) in stored {
                by_user.entry(user).or_default().push(e);
            }
            let mut ranked: Vec<(&str, f32)> = by_user
                .iter()
                .map(|(user, samples)| (*user, template_cosine(&query, samples)))
                .collect();
            ranked.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
            for (min_cosine, top) in [(-1.0, usize::MAX), (0.3, 4), (0.0, 1), (0.5, 2), (-1.0, 3)] {
                let want: Vec<(&str, f32)> = ranked
                    .iter()
                    .filter(|(_, c)| *c >= min_cosine)
                    .take(top)
                    .copied()
                    .collect();
                let got = gallery.best_matches(&query, min_cosine, top);
                assert_eq!(
                    got.len(),
                    want.len(),
                    "{when}, query {q} ({min_cosine}, {top})"
                );
                for ((gu, gc), (wu, wc)) in got.iter().zip(&want) {
                    assert_eq!(gu, wu, "{when}, query {q} ({min_cosine}, {top}): {got:?}");
                    assert!((gc - wc).abs() < 1e-5, "{when}, query {q}: {gc} vs {wc}");
                }
            }
        }
    };
    check(&gallery, &stored, &mut rng, "registered");

    // Every third sample of the even users goes; user01 merges into user00.
    for u in (0..40).step_by(2) {
        let userid = format!("user{u:02}");
        for info in gallery.user_samples(&userid).unwrap().iter().step_by(3) {
            assert!(gallery.delete_sample(info.id).unwrap());
        }
    }
    let mut kept = Vec::new();
    for u in 0..40 {
        let userid = format!("user{u:02}");
        let mine: Vec<&(String, Vec<f32>)> = stored.iter().filter(|(o, _)| *o == userid).collect();
        for (i, (_, e)) in mine.iter().enumerate() {
            if u % 2 == 1 || i % 3 != 0 {
                kept.push((userid.clone(), e.clone()));
            }
        }
    }
    gallery.rename_user("user01", "user00", true).unwrap();
    for (user, _) in &mut kept {
        if user == "user01" {
            *user = "user00".into();
        }
    }
    check(&gallery, &kept, &mut rng, "after deletions and a merge");
    drop(gallery);
    gallery = open(dir.path());
    check(&gallery, &kept, &mut rng, "reopened");
}

/// A sample that is only its embedding (no crop): for the matching tests.
fn bare_sample(embedding: Vec<f32>) -> NewSample {
    NewSample {
        embedding,
        model: "m".into(),
        crop: Vec::new(),
        source: "image".into(),
        det_score: 0.9,
        quality: None,
        negative: false,
    }
}

/// `a` moved towards `b` by `t`, renormalised.
fn mix(a: &[f32], b: &[f32], t: f32) -> Vec<f32> {
    normalised(
        a.iter()
            .zip(b)
            .map(|(x, y)| x * (1.0 - t) + y * t)
            .collect(),
    )
}

/// Timing probe for the 100,000-sample target; run with
/// `cargo test --release -p deepstackd --test gallery -- --ignored --nocapture`.
#[test]
#[ignore = "timing probe, slow in debug builds"]
fn best_matches_over_100k_samples() {
    let dir = tempfile::tempdir().unwrap();
    let gallery = open(dir.path());
    let mut rng = Rng(15);
    for u in 0..1000 {
        let samples = (0..100).map(|_| bare_sample(rng.unit_vector())).collect();
        gallery.register(&format!("user{u:04}"), samples).unwrap();
    }
    assert_eq!(gallery.stats(), (1000, 100_000));
    let queries: Vec<Vec<f32>> = (0..50).map(|_| rng.unit_vector()).collect();
    let start = std::time::Instant::now();
    // What recognition asks: users that may reach DeepStack's default 0.67, for a 4-face photo.
    let min_cosine =
        deepstackd::vision::calibration::recognition_cosine_for(0.67, &gallery.enrolment());
    for q in &queries {
        gallery.best_matches(q, min_cosine, 4);
    }
    let per_query = start.elapsed() / queries.len() as u32;
    eprintln!("best_matches over 100,000 samples: {per_query:?} per query");
}
