//! Restore-file validation: any bytes offered as a backup to a live gallery.
//!
//! Invariants: no panic; a refused file leaves the gallery exactly as it was; an accepted
//! one gives a gallery whose every match is a finite cosine in [-1, 1], whose list is
//! sorted, and which takes a registration afterwards.
#![no_main]

use std::sync::{Mutex, OnceLock};

use deepstackd::gallery::{Gallery, NewSample, EMBEDDING_DIM};
use libfuzzer_sys::fuzz_target;

struct Live {
    gallery: Gallery,
    _dir: tempfile::TempDir,
}

fn unit(seed: usize) -> Vec<f32> {
    let mut v: Vec<f32> = (0..EMBEDDING_DIM)
        .map(|i| ((i * 7 + seed * 13) % 17) as f32 - 8.0)
        .collect();
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
    v
}

fn sample(seed: usize) -> NewSample {
    NewSample {
        embedding: unit(seed),
        model: "fuzz".into(),
        crop: vec![0xFF, 0xD8, 0xFF, 0xD9],
        source: "image".into(),
        det_score: 0.9,
    }
}

fn live() -> &'static Mutex<Live> {
    static L: OnceLock<Mutex<Live>> = OnceLock::new();
    L.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let gallery = Gallery::open(dir.path()).unwrap();
        Mutex::new(Live { gallery, _dir: dir })
    })
}

/// Resets the live gallery to a known state: two users, three samples.
fn reset(g: &Gallery) {
    for user in g.list_users() {
        g.delete_user(&user).unwrap();
    }
    g.register("alice", vec![sample(1), sample(2)]).unwrap();
    g.register("bob", vec![sample(3)]).unwrap();
}

fuzz_target!(|data: &[u8]| {
    let live = live().lock().unwrap_or_else(|e| e.into_inner());
    let g = &live.gallery;
    reset(g);
    let before = (g.list_users(), g.stats());
    match g.restore_from_bytes(data) {
        Err(_) => assert_eq!(
            (g.list_users(), g.stats()),
            before,
            "a refused restore changed the gallery"
        ),
        Ok(()) => {
            let users = g.list_users();
            assert!(users.windows(2).all(|w| w[0] < w[1]), "unsorted: {users:?}");
            assert_eq!(g.stats().0, users.len());
            for (user, cos) in g.best_matches(&unit(5)) {
                assert!(
                    cos.is_finite() && (-1.001..=1.001).contains(&cos),
                    "{user}: {cos}"
                );
            }
            g.register("after-restore", vec![sample(9)])
                .expect("register after a restore");
        }
    }
});
