//! The in-memory matching index: every sample's embedding as int8, in one contiguous matrix.
//!
//! One row per sample: 128 int8 codes with the row's scale (`x ≈ code * scale`, scale =
//! max |x| / 127), rows packed back to back, so a query is one linear pass over memory the CPU
//! prefetches and vectorises: 100,000 samples are 12.8 MB (a quarter of f32) and scan in about
//! a millisecond. Users are small integer slots so "best score per user" is an array lookup.
//!
//! The int8 scores are approximate, with a known bound: for a row with scale `s` and a query
//! `q`, `|q·x - s (q·code)| <= s/2 * |q|_1`, plus the query's own int16 rounding. [`Index::candidates`] therefore returns
//! every sample that could be a user's best or could reach the caller's threshold, and the
//! gallery rescores those few exactly from SQLite: answers are the f32 cosines, as before.

use std::collections::HashMap;
use std::sync::OnceLock;

use super::EMBEDDING_DIM;

/// All embeddings of the gallery plus which user and sample each row is.
#[derive(Debug, Default)]
pub struct Index {
    /// Row-major, `EMBEDDING_DIM` codes per sample.
    codes: Vec<i8>,
    /// Scale of each row.
    scales: Vec<f32>,
    /// User slot of each row.
    row_user: Vec<u32>,
    /// Database id of each row's sample.
    row_sample: Vec<i64>,
    /// Slot -> userid. Includes users that have no samples.
    users: Vec<String>,
    /// Userid -> slot.
    slots: HashMap<String, u32>,
    /// [`Index::comparisons`], computed on first use after a change.
    comparisons: OnceLock<f64>,
}

/// Samples worth an exact score for one query: `(userid, sample ids)`, best users first.
pub type Candidates = Vec<(String, Vec<i64>)>;

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
    pub fn add_sample(&mut self, userid: &str, sample_id: i64, embedding: &[f32]) {
        self.comparisons.take();
        debug_assert_eq!(embedding.len(), EMBEDDING_DIM);
        let slot = self.add_user(userid);
        let max = embedding.iter().fold(0f32, |m, x| m.max(x.abs()));
        let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
        self.codes.extend(
            embedding
                .iter()
                .map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8),
        );
        self.scales.push(scale);
        self.row_user.push(slot);
        self.row_sample.push(sample_id);
    }

    /// Drops a user and all its rows; returns whether it existed.
    ///
    /// O(rows): rows after the removed ones shift down in place. Deletes are rare next to
    /// queries, and keeping the matrix dense is what keeps queries fast.
    pub fn remove_user(&mut self, userid: &str) -> bool {
        let Some(slot) = self.slots.remove(userid) else {
            return false;
        };
        self.retain_rows(|row_slot, _| row_slot != slot);
        self.free_slot(slot);
        true
    }

    /// Drops one sample's row; returns whether it was there. Its user stays.
    pub fn remove_sample(&mut self, sample_id: i64) -> bool {
        let before = self.row_sample.len();
        self.retain_rows(|_, id| id != sample_id);
        self.row_sample.len() != before
    }

    /// Gives `from`'s rows to `to`: a rename when `to` is new, a merge when it exists.
    /// Returns whether `from` existed.
    pub fn rename_user(&mut self, from: &str, to: &str) -> bool {
        self.comparisons.take();
        if from == to {
            return self.slots.contains_key(from);
        }
        let Some(slot) = self.slots.remove(from) else {
            return false;
        };
        match self.slots.get(to) {
            None => {
                self.users[slot as usize] = to.to_owned();
                self.slots.insert(to.to_owned(), slot);
            }
            Some(&target) => {
                for user in &mut self.row_user {
                    if *user == slot {
                        *user = target;
                    }
                }
                self.free_slot(slot);
            }
        }
        true
    }

    /// Keeps the rows for which `keep(user slot, sample id)` holds, in order, packed.
    fn retain_rows(&mut self, keep: impl Fn(u32, i64) -> bool) {
        self.comparisons.take();
        let mut kept = 0;
        for row in 0..self.row_user.len() {
            if !keep(self.row_user[row], self.row_sample[row]) {
                continue;
            }
            if kept != row {
                self.codes.copy_within(
                    row * EMBEDDING_DIM..(row + 1) * EMBEDDING_DIM,
                    kept * EMBEDDING_DIM,
                );
                self.scales[kept] = self.scales[row];
                self.row_user[kept] = self.row_user[row];
                self.row_sample[kept] = self.row_sample[row];
            }
            kept += 1;
        }
        self.codes.truncate(kept * EMBEDDING_DIM);
        self.scales.truncate(kept);
        self.row_user.truncate(kept);
        self.row_sample.truncate(kept);
    }

    /// Removes slot `slot` (no row uses it any more, its name already left `slots`), keeping
    /// slots dense: the last user takes the freed slot.
    fn free_slot(&mut self, slot: u32) {
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
    }

    /// The samples to score exactly for `query` so that the exact answer is known for: every
    /// user whose best cosine may reach `min_cosine`, at most the `top` best of them (and
    /// any user tied with them within the int8 error). Each user's samples are those whose
    /// approximate score is within twice the error of the user's best approximate score.
    ///
    /// A query of the wrong length matches nobody.
    pub fn candidates(&self, query: &[f32], min_cosine: f32, top: usize) -> Candidates {
        let Ok(query) = <&[f32; EMBEDDING_DIM]>::try_from(query) else {
            return Vec::new();
        };
        if top == 0 || self.row_user.is_empty() {
            return Vec::new();
        }
        // The query in int16: q ≈ qs * q16. Its own rounding adds at most qs/2 * |code|_1 * s
        // per row, which the bound below covers with |code|_1 <= 127 * 128.
        let q_max = query.iter().fold(0f32, |m, x| m.max(x.abs()));
        let q_scale = if q_max > 0.0 { q_max / 32767.0 } else { 1.0 };
        let q16: Vec<i16> = query
            .iter()
            .map(|x| (x / q_scale).round().clamp(-32767.0, 32767.0) as i16)
            .collect();
        // The largest error of any row: s/2 * |q|_1 (the codes) + s * qs/2 * 127 * 128.
        let l1: f32 = query.iter().map(|x| x.abs()).sum();
        let max_scale = self.scales.iter().fold(0f32, |m, &s| m.max(s));
        let error = max_scale * (l1 / 2.0 + q_scale / 2.0 * 127.0 * 128.0) * (1.0 + 1e-4) + 1e-6;

        let mut approx = Vec::with_capacity(self.row_user.len());
        let mut best = vec![f32::NEG_INFINITY; self.users.len()];
        for ((codes, &scale), &slot) in self
            .codes
            .chunks_exact(EMBEDDING_DIM)
            .zip(&self.scales)
            .zip(&self.row_user)
        {
            let score = crate::dot::dot_i8_i16(codes, &q16) as f32 * (q_scale * scale);
            approx.push(score);
            let entry = &mut best[slot as usize];
            if score > *entry {
                *entry = score;
            }
        }

        // Users that may reach the threshold, best first.
        let mut users: Vec<u32> = (0..self.users.len() as u32)
            .filter(|&slot| best[slot as usize] + error >= min_cosine)
            .collect();
        users.sort_by(|&a, &b| best[b as usize].total_cmp(&best[a as usize]));
        // Past the `top`-th, only users that could still overtake it.
        if let Some(&nth) = users.get(top - 1) {
            let floor = best[nth as usize] - 2.0 * error;
            users.retain(|&slot| best[slot as usize] >= floor);
        }

        let mut wanted = vec![f32::INFINITY; self.users.len()];
        for &slot in &users {
            wanted[slot as usize] = best[slot as usize] - 2.0 * error;
        }
        let mut rows: HashMap<u32, Vec<i64>> = HashMap::with_capacity(users.len());
        for (row, (&slot, &score)) in self.row_user.iter().zip(&approx).enumerate() {
            if score >= wanted[slot as usize] {
                rows.entry(slot).or_default().push(self.row_sample[row]);
            }
        }
        users
            .into_iter()
            .map(|slot| {
                let samples = rows.remove(&slot).unwrap_or_default();
                (self.users[slot as usize].clone(), samples)
            })
            .collect()
    }

    /// All userids, sorted bytewise (what SQLite's BINARY collation and DeepStack return).
    pub fn userids(&self) -> Vec<String> {
        let mut ids = self.users.clone();
        // `str`'s Ord compares UTF-8 bytes, exactly like BINARY.
        ids.sort_unstable();
        ids
    }

    /// How many chances a stranger's face has to resemble someone here: the sum over users of
    /// their sample count to the power `calibration::SAMPLES_EXPONENT`. What a best cosine's
    /// confidence is measured against (see `vision::calibration`).
    pub fn comparisons(&self) -> f64 {
        *self.comparisons.get_or_init(|| {
            let mut per_user = vec![0usize; self.users.len()];
            for &slot in &self.row_user {
                per_user[slot as usize] += 1;
            }
            crate::vision::calibration::comparisons(per_user)
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn axis(i: usize) -> Vec<f32> {
        let mut v = vec![0.0; EMBEDDING_DIM];
        v[i] = 1.0;
        v
    }

    fn users_of(c: &Candidates) -> Vec<&str> {
        c.iter().map(|(u, _)| u.as_str()).collect()
    }

    #[test]
    fn candidates_per_user_and_removal_keeps_the_rest_intact() {
        let mut index = Index::new();
        index.add_sample("a", 1, &axis(0));
        index.add_sample("b", 2, &axis(1));
        index.add_sample("a", 3, &axis(2));
        index.add_sample("c", 4, &axis(3));
        index.add_user("empty");

        let hits = index.candidates(&axis(2), 0.5, 10);
        assert_eq!(hits, vec![("a".to_owned(), vec![3])]);
        let all = index.candidates(&axis(2), -1.0, 10);
        assert_eq!(all.len(), 3, "a user without samples never matches");
        assert_eq!(all[0], ("a".to_owned(), vec![3]));

        assert!(index.remove_user("a"));
        assert!(!index.remove_user("a"));
        assert_eq!(index.sample_count(), 2);
        assert_eq!(index.userids(), ["b", "c", "empty"]);
        assert_eq!(
            index.candidates(&axis(3), 0.5, 10),
            vec![("c".to_owned(), vec![4])]
        );
        assert_eq!(
            index.candidates(&axis(1), 0.5, 10),
            vec![("b".to_owned(), vec![2])]
        );
        assert!(index.candidates(&axis(2), 0.5, 10).is_empty());

        // The user moved into the freed slot still receives its new samples.
        index.add_sample("empty", 5, &axis(4));
        assert_eq!(users_of(&index.candidates(&axis(4), 0.5, 10)), ["empty"]);
    }

    #[test]
    fn top_limits_users_but_keeps_ties_within_the_error() {
        let mut index = Index::new();
        let mut v = axis(0);
        for (i, user) in ["x", "y", "z"].iter().enumerate() {
            v[1] = 0.1 * i as f32; // x: 1.0, y: ~0.995, z: ~0.98 against axis 0
            let n: f32 = v.iter().map(|a| a * a).sum::<f32>().sqrt();
            let unit: Vec<f32> = v.iter().map(|a| a / n).collect();
            index.add_sample(user, i as i64, &unit);
        }
        index.add_sample("far", 9, &axis(5));
        let one = index.candidates(&axis(0), -1.0, 1);
        assert_eq!(one[0].0, "x");
        assert!(!users_of(&one).contains(&"far"), "{one:?}");
    }

    #[test]
    fn samples_removed_and_users_renamed_or_merged_in_place() {
        let mut index = Index::new();
        index.add_sample("a", 1, &axis(0));
        index.add_sample("b", 2, &axis(1));
        index.add_sample("a", 3, &axis(2));
        assert!(index.remove_sample(1));
        assert!(!index.remove_sample(1));
        assert!(index.candidates(&axis(0), 0.5, 10).is_empty());
        assert_eq!(users_of(&index.candidates(&axis(2), 0.5, 10)), ["a"]);

        assert!(index.rename_user("a", "c"));
        assert_eq!(index.userids(), ["b", "c"]);
        assert_eq!(users_of(&index.candidates(&axis(2), 0.5, 10)), ["c"]);

        assert!(index.rename_user("b", "c"), "a merge");
        assert_eq!(index.userids(), ["c"]);
        assert_eq!(
            index.candidates(&axis(1), 0.5, 10),
            vec![("c".to_owned(), vec![2])]
        );
        assert!(!index.rename_user("gone", "x"));
    }

    #[test]
    fn comparisons_follow_every_change() {
        let mut index = Index::new();
        assert_eq!(index.comparisons(), 0.0);
        index.add_sample("a", 1, &axis(0));
        index.add_sample("b", 2, &axis(1));
        assert_eq!(index.comparisons(), 2.0);
        index.add_sample("a", 3, &axis(2));
        let two_and_one = crate::vision::calibration::comparisons([2, 1]);
        assert_eq!(index.comparisons(), two_and_one);
        assert!(index.rename_user("b", "a"), "a merge");
        assert_eq!(
            index.comparisons(),
            crate::vision::calibration::comparisons([3])
        );
        assert!(index.remove_sample(3));
        assert_eq!(
            index.comparisons(),
            crate::vision::calibration::comparisons([2])
        );
        assert!(index.remove_user("a"));
        assert_eq!(index.comparisons(), 0.0);
    }

    #[test]
    fn wrong_query_length_matches_nobody() {
        let mut index = Index::new();
        index.add_sample("a", 1, &axis(0));
        assert!(index.candidates(&[1.0; 3], -1.0, 5).is_empty());
    }
}
