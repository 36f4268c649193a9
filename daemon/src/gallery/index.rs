//! The in-memory matching index: every sample's embedding in one contiguous matrix.
//!
//! One row per sample, rows packed back to back in a single `Vec<f32>`, so a query is one
//! linear pass over memory that the CPU prefetches and vectorises (100,000 samples x 128
//! floats is 51 MB, scanned in a couple of milliseconds). Users are small integer slots so
//! "best score per user" is an array lookup, not a hash per row.

use std::collections::HashMap;

use super::EMBEDDING_DIM;

/// All embeddings of the gallery plus which user each belongs to.
#[derive(Debug, Default)]
pub struct Index {
    /// Row-major, `EMBEDDING_DIM` floats per sample.
    vectors: Vec<f32>,
    /// User slot of each row.
    row_user: Vec<u32>,
    /// Slot -> userid. Includes users that have no samples.
    users: Vec<String>,
    /// Userid -> slot.
    slots: HashMap<String, u32>,
}

impl Index {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes sure `userid` has a slot and returns it.
    pub fn add_user(&mut self, userid: &str) -> u32 {
        if let Some(&slot) = self.slots.get(userid) {
            return slot;
        }
        let slot = self.users.len() as u32;
        self.users.push(userid.to_owned());
        self.slots.insert(userid.to_owned(), slot);
        slot
    }

    /// Appends one sample row; the caller checked `embedding.len() == EMBEDDING_DIM`.
    pub fn add_sample(&mut self, userid: &str, embedding: &[f32]) {
        debug_assert_eq!(embedding.len(), EMBEDDING_DIM);
        let slot = self.add_user(userid);
        self.vectors.extend_from_slice(embedding);
        self.row_user.push(slot);
    }

    /// Drops a user and all its rows; returns whether it existed.
    ///
    /// O(rows): rows after the removed ones shift down in place. Deletes are rare next to
    /// queries, and keeping the matrix dense is what keeps queries fast.
    pub fn remove_user(&mut self, userid: &str) -> bool {
        let Some(slot) = self.slots.remove(userid) else {
            return false;
        };
        let mut kept = 0;
        for row in 0..self.row_user.len() {
            if self.row_user[row] == slot {
                continue;
            }
            if kept != row {
                self.vectors.copy_within(
                    row * EMBEDDING_DIM..(row + 1) * EMBEDDING_DIM,
                    kept * EMBEDDING_DIM,
                );
                self.row_user[kept] = self.row_user[row];
            }
            kept += 1;
        }
        self.vectors.truncate(kept * EMBEDDING_DIM);
        self.row_user.truncate(kept);

        // Keep slots dense: the last user takes the freed slot.
        let last = (self.users.len() - 1) as u32;
        self.users.swap_remove(slot as usize);
        if slot != last {
            self.slots.insert(self.users[slot as usize].clone(), slot);
            for user in &mut self.row_user {
                if *user == last {
                    *user = slot;
                }
            }
        }
        true
    }

    /// Best cosine per user over all of its samples, highest first.
    ///
    /// Embeddings are unit vectors, so the cosine is the dot product. A query of the wrong
    /// length matches nobody.
    pub fn best_per_user(&self, query: &[f32]) -> Vec<(String, f32)> {
        let Ok(query) = <&[f32; EMBEDDING_DIM]>::try_from(query) else {
            return Vec::new();
        };
        let mut best = vec![f32::NEG_INFINITY; self.users.len()];
        for (row, &slot) in self.vectors.chunks_exact(EMBEDDING_DIM).zip(&self.row_user) {
            let score = dot(query, row);
            let entry = &mut best[slot as usize];
            if score > *entry {
                *entry = score;
            }
        }
        let mut out: Vec<(String, f32)> = best
            .into_iter()
            .enumerate()
            .filter(|(_, score)| score.is_finite())
            .map(|(slot, score)| (self.users[slot].clone(), score))
            .collect();
        // Ties (the same photo registered under two names) break by userid for stable answers.
        out.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        out
    }

    /// All userids, sorted bytewise (what SQLite's BINARY collation and DeepStack return).
    pub fn userids(&self) -> Vec<String> {
        let mut ids = self.users.clone();
        // `str`'s Ord compares UTF-8 bytes, exactly like BINARY.
        ids.sort_unstable();
        ids
    }

    /// Number of users.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// Number of samples (rows).
    pub fn sample_count(&self) -> usize {
        self.row_user.len()
    }
}

/// Dot product with eight independent accumulators: float addition is not associative, so
/// the compiler only vectorises a reduction written this way.
fn dot(a: &[f32; EMBEDDING_DIM], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    for (ca, cb) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for ((s, x), y) in acc.iter_mut().zip(ca).zip(cb) {
            *s += x * y;
        }
    }
    acc.iter().sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn axis(i: usize) -> Vec<f32> {
        let mut v = vec![0.0; EMBEDDING_DIM];
        v[i] = 1.0;
        v
    }

    #[test]
    fn best_score_per_user_and_removal_keeps_the_rest_intact() {
        let mut index = Index::new();
        index.add_sample("a", &axis(0));
        index.add_sample("b", &axis(1));
        index.add_sample("a", &axis(2));
        index.add_sample("c", &axis(3));
        index.add_user("empty");

        let hits = index.best_per_user(&axis(2));
        assert_eq!(hits[0], ("a".to_owned(), 1.0));
        assert_eq!(hits.len(), 3, "a user without samples never matches");

        assert!(index.remove_user("a"));
        assert!(!index.remove_user("a"));
        assert_eq!(index.sample_count(), 2);
        assert_eq!(index.userids(), ["b", "c", "empty"]);
        assert_eq!(index.best_per_user(&axis(3))[0], ("c".to_owned(), 1.0));
        assert_eq!(index.best_per_user(&axis(1))[0], ("b".to_owned(), 1.0));
        assert!(index.best_per_user(&axis(2)).iter().all(|(_, s)| *s == 0.0));

        // The user moved into the freed slot still receives its new samples.
        index.add_sample("empty", &axis(4));
        assert_eq!(index.best_per_user(&axis(4))[0], ("empty".to_owned(), 1.0));
    }

    #[test]
    fn wrong_query_length_matches_nobody() {
        let mut index = Index::new();
        index.add_sample("a", &axis(0));
        assert!(index.best_per_user(&[1.0; 3]).is_empty());
    }
}
