//! Managing the gallery in-process against real SQLite files: renames and merges, removing
//! one sample, quality figures, the re-embedding's staging across a reopen, and restoring a
//! backup of the first schema.

use std::path::Path;

use deepstackd::gallery::{
    Gallery, GalleryError, NewSample, ReembedState, RenameOutcome, EMBEDDING_DIM,
};
use deepstackd::vision::quality::Quality;
use rusqlite::Connection;

fn open(dir: &Path) -> Gallery {
    Gallery::open(dir).expect("open gallery")
}

/// A unit vector along axis `i`: each test user gets its own direction.
fn axis(i: usize) -> Vec<f32> {
    let mut v = vec![0.0; EMBEDDING_DIM];
    v[i] = 1.0;
    v
}

fn sample(i: usize) -> NewSample {
    NewSample {
        embedding: axis(i),
        model: "old-model".into(),
        crop: vec![0xFF, 0xD8, i as u8, 0xFF, 0xD9],
        source: format!("image{i}"),
        det_score: 0.9,
        quality: None,
        negative: false,
    }
}

fn best(g: &Gallery, i: usize) -> (String, f32) {
    g.best_matches(&axis(i), -1.0, usize::MAX).remove(0)
}

#[test]
fn rename_refuses_a_silent_merge_and_merges_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let g = open(dir.path());
    g.register("ann", vec![sample(0), sample(1)]).unwrap();
    g.register("bob", vec![sample(2)]).unwrap();

    assert_eq!(
        g.rename_user("ann", "anna", false).unwrap(),
        RenameOutcome::Renamed
    );
    assert_eq!(g.list_users(), ["anna", "bob"]);
    assert_eq!(best(&g, 1).0, "anna");
    assert_eq!(g.user_samples("anna").unwrap().len(), 2);

    assert!(matches!(
        g.rename_user("anna", "bob", false),
        Err(GalleryError::UserExists)
    ));
    assert_eq!(g.list_users(), ["anna", "bob"]);
    assert!(matches!(
        g.rename_user("nobody", "x", false),
        Err(GalleryError::UnknownUser)
    ));
    assert_eq!(
        g.rename_user("bob", "bob", false).unwrap(),
        RenameOutcome::Unchanged
    );

    assert_eq!(
        g.rename_user("anna", "bob", true).unwrap(),
        RenameOutcome::Merged
    );
    assert_eq!(g.list_users(), ["bob"]);
    assert_eq!(g.stats(), (1, 3));
    assert_eq!(best(&g, 0).0, "bob");
    drop(g);
    // What the index showed is what was committed.
    let g = open(dir.path());
    assert_eq!(g.list_users(), ["bob"]);
    assert_eq!(g.user_samples("bob").unwrap().len(), 3);
}

#[test]
fn removing_one_sample_keeps_the_others_and_the_user() {
    let dir = tempfile::tempdir().unwrap();
    let g = open(dir.path());
    g.register("ann", vec![sample(0), sample(1)]).unwrap();
    let ids: Vec<i64> = g
        .user_samples("ann")
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect();
    assert!(g.delete_sample(ids[0]).unwrap());
    assert!(!g.delete_sample(ids[0]).unwrap());
    assert!(!g.delete_sample(987_654).unwrap());
    assert_eq!(g.stats(), (1, 1));
    // The removed sample matches nobody any more; the other still matches.
    assert!(best(&g, 0).1.abs() < 1e-6);
    assert_eq!(best(&g, 1), ("ann".into(), 1.0));
    assert!(g.delete_sample(ids[1]).unwrap());
    let users = g.user_summaries().unwrap();
    assert_eq!((users[0].userid.as_str(), users[0].samples), ("ann", 0));
    assert_eq!(users[0].newest_sample, None);
    assert!(g.best_matches(&axis(1), -1.0, usize::MAX).is_empty());
}

#[test]
fn quality_figures_are_stored_and_summaries_count_samples() {
    let dir = tempfile::tempdir().unwrap();
    let g = open(dir.path());
    let q = Quality {
        score: 0.75,
        face_px: 80,
        sharpness: 300.5,
        det_score: 0.9,
        yaw: -12.5,
        pitch: 3.0,
    };
    let mut s = sample(0);
    s.quality = Some(q);
    g.register("ann", vec![s, sample(1)]).unwrap();
    g.register("bob", vec![sample(2)]).unwrap();
    let infos = g.user_samples("ann").unwrap();
    assert_eq!(infos[0].quality, Some(q));
    assert_eq!(infos[1].quality, None);
    let users = g.user_summaries().unwrap();
    let counts: Vec<(&str, usize)> = users
        .iter()
        .map(|u| (u.userid.as_str(), u.samples))
        .collect();
    assert_eq!(counts, [("ann", 2), ("bob", 1)]);
    assert_eq!(users[0].newest_sample, Some(infos[1].id));
}

#[test]
fn reembedding_stages_survives_a_reopen_and_swaps_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let g = open(dir.path());
    for i in 0..6 {
        g.register(&format!("u{i}"), vec![sample(i)]).unwrap();
    }
    let p = g.reembed_start("new-model").unwrap();
    assert_eq!((p.state, p.done, p.total), (ReembedState::Running, 0, 6));
    assert!(matches!(
        g.reembed_start("new-model"),
        Err(GalleryError::ReembedRunning)
    ));
    // Stage the first three with "new" embeddings: user i moves to axis i + 10.
    let batch = g.reembed_next(0, 3).unwrap();
    assert_eq!(batch.len(), 3);
    let staged: Vec<(i64, Vec<f32>)> = batch
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id, axis(i + 10)))
        .collect();
    g.reembed_stage("new-model", &staged, 0).unwrap();
    // Nothing changes for recognition until the swap.
    assert_eq!(best(&g, 0), ("u0".into(), 1.0));
    assert!(best(&g, 10).1.abs() < 1e-6);
    drop(g);

    // "Restart": the staged rows are found, the old embeddings still serve.
    let g = open(dir.path());
    let p = g.reembed_progress();
    assert_eq!(
        (p.state, p.done, p.total),
        (ReembedState::Interrupted, 3, 6)
    );
    assert_eq!(best(&g, 0), ("u0".into(), 1.0));
    // Resuming with the same model keeps the staged three and offers only the rest.
    let p = g.reembed_start("new-model").unwrap();
    assert_eq!(p.done, 3);
    let rest = g.reembed_next(0, 100).unwrap();
    assert_eq!(rest.len(), 3);
    assert!(rest
        .iter()
        .all(|c| !staged.iter().any(|(id, _)| *id == c.id)));
    let rest: Vec<(i64, Vec<f32>)> = rest
        .iter()
        .enumerate()
        .map(|(i, c)| (c.id, axis(i + 13)))
        .collect();
    g.reembed_stage("new-model", &rest, 0).unwrap();
    assert_eq!(g.reembed_finish().unwrap(), 6);
    let p = g.reembed_progress();
    assert_eq!((p.state, p.done, p.total), (ReembedState::Done, 6, 6));
    for i in 0..6 {
        assert_eq!(best(&g, i + 10), (format!("u{i}"), 1.0));
    }
    assert!(g
        .user_samples("u0")
        .unwrap()
        .iter()
        .all(|s| s.model == "new-model"));
    drop(g);
    let g = open(dir.path());
    assert_eq!(g.reembed_progress().state, ReembedState::Idle);
    assert_eq!(best(&g, 15), ("u5".into(), 1.0));

    // Staged rows of another model are discarded by the next run.
    g.reembed_start("model-a").unwrap();
    let one = g.reembed_next(0, 1).unwrap();
    g.reembed_stage("model-a", &[(one[0].id, axis(40))], 0)
        .unwrap();
    drop(g);
    let g = open(dir.path());
    assert_eq!(g.reembed_start("model-b").unwrap().done, 0);
    assert_eq!(g.reembed_next(0, 100).unwrap().len(), 6);
}

#[test]
fn a_backup_of_the_first_schema_restores() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("v1.sqlite3");
    let blob: String = axis(3)
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .map(|b| format!("{b:02x}"))
        .collect();
    let conn = Connection::open(&path).unwrap();
    conn.execute_batch(&format!(
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
         CREATE TABLE users (id INTEGER PRIMARY KEY AUTOINCREMENT,
             userid TEXT NOT NULL UNIQUE CHECK (length(userid) > 0), created_at INTEGER NOT NULL);
         CREATE TABLE samples (id INTEGER PRIMARY KEY AUTOINCREMENT,
             user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
             embedding BLOB NOT NULL CHECK (length(embedding) = 512), model TEXT NOT NULL,
             crop BLOB NOT NULL, source TEXT NOT NULL, det_score REAL NOT NULL,
             added_at INTEGER NOT NULL);
         CREATE INDEX samples_by_user ON samples(user_id);
         INSERT INTO meta(key, value) VALUES ('format', 'deepstack-rs-gallery');
         INSERT INTO users VALUES (1, 'old', 0);
         INSERT INTO samples VALUES (1, 1, x'{blob}', 'm', x'ffd8ffd9', 'image', 0.9, 0);
         PRAGMA user_version = 1;"
    ))
    .unwrap();
    drop(conn);
    let g = open(&dir.path().join("data"));
    g.restore_from_bytes(&std::fs::read(&path).unwrap())
        .unwrap();
    assert_eq!(best(&g, 3), ("old".into(), 1.0));
    assert_eq!(g.user_samples("old").unwrap()[0].quality, None);
}

#[test]
fn a_restore_stops_a_running_reembedding() {
    let dir = tempfile::tempdir().unwrap();
    let g = open(dir.path());
    g.register("ann", vec![sample(0)]).unwrap();
    let backup = g.backup_bytes().unwrap();
    g.reembed_start("new-model").unwrap();
    let batch = g.reembed_next(0, 10).unwrap();
    g.restore_from_bytes(&backup).unwrap();
    let p = g.reembed_progress();
    assert_eq!(p.state, ReembedState::Failed);
    assert!(p.error.unwrap().contains("restored"));
    // The batch read before the restore is refused: its crops may be other samples now.
    assert!(matches!(
        g.reembed_stage("new-model", &[(batch[0].id, axis(9))], 0),
        Err(GalleryError::ReembedStopped)
    ));
    assert!(matches!(
        g.reembed_finish(),
        Err(GalleryError::ReembedStopped)
    ));
    assert_eq!(best(&g, 0), ("ann".into(), 1.0));
    // A new run starts from scratch.
    assert_eq!(g.reembed_start("new-model").unwrap().done, 0);
}
