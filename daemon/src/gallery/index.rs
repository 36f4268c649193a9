//! The in-memory matching index: one template per user, the sum of the user's sample
//! embeddings, in one contiguous f32 matrix.
//!
//! A face is scored against each user's template normalised (the mean direction of the
//! user's photos): it ranks the right person above strangers better than the best single
//! sample does (README, "What a recognition confidence means"). A query is one linear pass
//! over `users x 128` floats the CPU prefetches and vectorises, exact in f32: 1,000 users are
//! 0.5 MB and scan in tens of microseconds. Users are small integer slots, so a change is an
//! array update: adding a sample adds its embedding to the sum, removing one subtracts it.
//!
//! A user may also have negative samples: faces someone said were "not" that person (a
//! stranger the gallery named). They never enter the template; a face that resembles one of
//! them more than the user's template (by [`NEGATIVE_MARGIN`]) is not given to that user
//! ([`Index::best_users`]). There are few of them, and only users a face already reaches are
//! checked against theirs.

use std::collections::HashMap;
use std::sync::OnceLock;

use super::EMBEDDING_DIM;
use crate::vision::calibration::Enrolment;

/// How much more a face must resemble one of a user's negative samples than the user's
/// template for the user to be vetoed: `cosine(face, negative) > cosine(face, template) +
/// NEGATIVE_MARGIN`. Chosen by `deepstack-eval evaluate` ("Negative samples") on the
/// calibration half of celeba-dev, reported on the other half (README).
pub const NEGATIVE_MARGIN: f32 = 0.0;

/// Every user's template plus which user each sample is.
#[derive(Debug, Default)]
pub struct Index {
    /// Slot-major, `EMBEDDING_DIM` floats per user: the sum of the user's sample embeddings.
    sums: Vec<f32>,
    /// 1 / |sum| of each slot (0 for a user without samples: it matches nobody).
    inverse_norms: Vec<f32>,
    /// Samples of each slot.
    samples: Vec<u32>,
    /// Database id -> slot of every sample.
    sample_user: HashMap<i64, u32>,
    /// Slot -> userid. Includes users that have no samples.
    users: Vec<String>,
    /// Userid -> slot.
    slots: HashMap<String, u32>,
    /// Negative samples of each slot: database id and embedding.
    negatives: Vec<Vec<(i64, Box<[f32]>)>>,
    /// Database id -> slot of every negative sample.
    negative_user: HashMap<i64, u32>,
    /// [`NEGATIVE_MARGIN`], but for the evaluation's sweep.
    negative_margin: f32,
    /// [`Index::enrolment`], computed on first use after a change.
    enrolment: OnceLock<Enrolment>,
}

impl Index {
    /// An empty index.
    pub fn new() -> Self {
        Self::with_negative_margin(NEGATIVE_MARGIN)
    }

    /// An empty index that vetoes users by another margin than [`NEGATIVE_MARGIN`] (to
    /// measure which one to ship).
    pub fn with_negative_margin(margin: f32) -> Self {
        Self {
            negative_margin: margin,
            ..Self::default()
        }
    }

    /// Makes sure `userid` has a slot and returns it.
    pub fn add_user(&mut self, userid: &str) -> u32 {
        if let Some(&slot) = self.slots.get(userid) {
            return slot;
        }
        let slot = self.users.len() as u32;
        self.users.push(userid.to_owned());
        self.slots.insert(userid.to_owned(), slot);
        self.sums.extend([0f32; EMBEDDING_DIM]);
        self.inverse_norms.push(0.0);
        self.samples.push(0);
        self.negatives.push(Vec::new());
        slot
    }

    /// Adds a sample or (`negative`) a negative sample.
    pub fn add(&mut self, userid: &str, sample_id: i64, negative: bool, embedding: &[f32]) {
        if negative {
            self.add_negative(userid, sample_id, embedding);
        } else {
            self.add_sample(userid, sample_id, embedding);
        }
    }

    /// Adds one negative sample ("not this person") to its user; the caller checked
    /// `embedding.len() == EMBEDDING_DIM`.
    pub fn add_negative(&mut self, userid: &str, sample_id: i64, embedding: &[f32]) {
        debug_assert_eq!(embedding.len(), EMBEDDING_DIM);
        let slot = self.add_user(userid);
        let previous = self.negative_user.insert(sample_id, slot);
        debug_assert!(previous.is_none(), "negative {sample_id} added twice");
        self.negatives[slot as usize].push((sample_id, embedding.into()));
    }

    /// Adds one sample to its user's template; the caller checked
    /// `embedding.len() == EMBEDDING_DIM`.
    pub fn add_sample(&mut self, userid: &str, sample_id: i64, embedding: &[f32]) {
        debug_assert_eq!(embedding.len(), EMBEDDING_DIM);
        let slot = self.add_user(userid);
        let previous = self.sample_user.insert(sample_id, slot);
        debug_assert!(previous.is_none(), "sample {sample_id} added twice");
        self.samples[slot as usize] += 1;
        self.add_to_sum(slot, embedding, 1.0);
    }

    /// `sum[slot] += sign * embedding`, then its norm.
    fn add_to_sum(&mut self, slot: u32, embedding: &[f32], sign: f32) {
        self.enrolment.take();
        let sum = self.sum_mut(slot);
        for (s, e) in sum.iter_mut().zip(embedding) {
            *s += sign * e;
        }
        self.renormalise(slot);
    }

    fn sum_mut(&mut self, slot: u32) -> &mut [f32] {
        let at = slot as usize * EMBEDDING_DIM;
        &mut self.sums[at..at + EMBEDDING_DIM]
    }

    fn renormalise(&mut self, slot: u32) {
        let at = slot as usize * EMBEDDING_DIM;
        let norm = self.sums[at..at + EMBEDDING_DIM]
            .iter()
            .map(|x| x * x)
            .sum::<f32>()
            .sqrt();
        self.inverse_norms[slot as usize] = if self.samples[slot as usize] > 0 && norm > 0.0 {
            1.0 / norm
        } else {
            // Exactly zero: no float residue of removed samples can match anybody.
            self.sums[at..at + EMBEDDING_DIM].fill(0.0);
            0.0
        };
    }

    /// Whether the sample (or negative sample) of database id `sample_id` is in the index.
    pub fn has_sample(&self, sample_id: i64) -> bool {
        self.sample_user.contains_key(&sample_id) || self.negative_user.contains_key(&sample_id)
    }

    /// Drops a user and its samples; returns whether it existed.
    pub fn remove_user(&mut self, userid: &str) -> bool {
        let Some(slot) = self.slots.remove(userid) else {
            return false;
        };
        self.sample_user.retain(|_, s| *s != slot);
        self.negative_user.retain(|_, s| *s != slot);
        self.free_slot(slot);
        true
    }

    /// Drops one sample (whose stored embedding is `embedding`) from its user's template, or
    /// one negative sample; returns whether it was there. Its user stays.
    pub fn remove_sample(&mut self, sample_id: i64, embedding: &[f32]) -> bool {
        if let Some(slot) = self.negative_user.remove(&sample_id) {
            self.negatives[slot as usize].retain(|(id, _)| *id != sample_id);
            return true;
        }
        let Some(slot) = self.sample_user.remove(&sample_id) else {
            return false;
        };
        self.samples[slot as usize] -= 1;
        self.add_to_sum(slot, embedding, -1.0);
        true
    }

    /// Gives `from`'s samples to `to`: a rename when `to` is new, a merge when it exists.
    /// Returns whether `from` existed.
    pub fn rename_user(&mut self, from: &str, to: &str) -> bool {
        self.enrolment.take();
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
                for user in self
                    .sample_user
                    .values_mut()
                    .chain(self.negative_user.values_mut())
                {
                    if *user == slot {
                        *user = target;
                    }
                }
                let negatives = std::mem::take(&mut self.negatives[slot as usize]);
                self.negatives[target as usize].extend(negatives);
                let at = slot as usize * EMBEDDING_DIM;
                let moved: Vec<f32> = self.sums[at..at + EMBEDDING_DIM].to_vec();
                self.samples[target as usize] += self.samples[slot as usize];
                self.add_to_sum(target, &moved, 1.0);
                self.free_slot(slot);
            }
        }
        true
    }

    /// Removes slot `slot` (no sample uses it any more, its name already left `slots`),
    /// keeping slots dense: the last user takes the freed slot.
    fn free_slot(&mut self, slot: u32) {
        self.enrolment.take();
        let last = (self.users.len() - 1) as u32;
        self.users.swap_remove(slot as usize);
        self.inverse_norms.swap_remove(slot as usize);
        self.samples.swap_remove(slot as usize);
        self.negatives.swap_remove(slot as usize);
        let (at, end) = (slot as usize * EMBEDDING_DIM, last as usize * EMBEDDING_DIM);
        self.sums.copy_within(end..end + EMBEDDING_DIM, at);
        self.sums.truncate(end);
        if slot != last {
            self.slots.insert(self.users[slot as usize].clone(), slot);
            for user in self
                .sample_user
                .values_mut()
                .chain(self.negative_user.values_mut())
            {
                if *user == last {
                    *user = slot;
                }
            }
        }
    }

    /// The users whose template cosine with the unit-length `query` is at least
    /// `min_cosine`, at most `top` of them, highest first (ties by userid, for stable
    /// answers: the same photo registered under two names). A user one of whose negative
    /// samples `query` resembles more (see [`NEGATIVE_MARGIN`]) is left out. A query of the
    /// wrong length matches nobody.
    pub fn best_users(&self, query: &[f32], min_cosine: f32, top: usize) -> Vec<(String, f32)> {
        if query.len() != EMBEDDING_DIM || top == 0 {
            return Vec::new();
        }
        let mut hits: Vec<(u32, f32)> = self
            .sums
            .chunks_exact(EMBEDDING_DIM)
            .zip(&self.inverse_norms)
            .enumerate()
            .filter(|(_, (_, &inverse))| inverse > 0.0)
            .map(|(slot, (sum, &inverse))| (slot as u32, crate::dot::dot(sum, query) * inverse))
            .filter(|&(_, cosine)| cosine >= min_cosine)
            .filter(|&(slot, cosine)| !self.vetoed(slot, query, cosine))
            .collect();
        hits.sort_by(|a, b| {
            b.1.total_cmp(&a.1)
                .then_with(|| self.users[a.0 as usize].cmp(&self.users[b.0 as usize]))
        });
        hits.truncate(top);
        hits.into_iter()
            .map(|(slot, cosine)| (self.users[slot as usize].clone(), cosine.min(1.0)))
            .collect()
    }

    /// Whether one of `slot`'s negative samples resembles `query` more than the slot's
    /// template does (`cosine`).
    fn vetoed(&self, slot: u32, query: &[f32], cosine: f32) -> bool {
        self.negatives[slot as usize]
            .iter()
            .any(|(_, negative)| crate::dot::dot(negative, query) > cosine + self.negative_margin)
    }

    /// All userids, sorted bytewise (what SQLite's BINARY collation and DeepStack return).
    pub fn userids(&self) -> Vec<String> {
        let mut ids = self.users.clone();
        // `str`'s Ord compares UTF-8 bytes, exactly like BINARY.
        ids.sort_unstable();
        ids
    }

    /// How many users have 1, 2, 3, 4, 5 or more samples: what a best cosine's confidence is
    /// measured against (see `vision::calibration`).
    pub fn enrolment(&self) -> Enrolment {
        *self
            .enrolment
            .get_or_init(|| Enrolment::of(self.samples.iter().map(|&k| k as usize)))
    }

    /// Number of users.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// Number of samples (not counting negative ones).
    pub fn sample_count(&self) -> usize {
        self.sample_user.len()
    }

    /// Number of negative samples.
    pub fn negative_count(&self) -> usize {
        self.negative_user.len()
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

    fn unit(v: &[f32]) -> Vec<f32> {
        let n = v.iter().map(|a| a * a).sum::<f32>().sqrt();
        v.iter().map(|a| a / n).collect()
    }

    fn users_of(c: &[(String, f32)]) -> Vec<&str> {
        c.iter().map(|(u, _)| u.as_str()).collect()
    }

    #[test]
    fn a_user_is_scored_by_the_mean_of_its_samples() {
        let mut index = Index::new();
        index.add_sample("a", 1, &axis(0));
        index.add_sample("a", 3, &axis(2));
        index.add_sample("b", 2, &axis(1));
        index.add_user("empty");
        // a's template is (e0 + e2) / sqrt(2).
        let hits = index.best_users(&axis(2), 0.5, 10);
        assert_eq!(users_of(&hits), ["a"]);
        assert!((hits[0].1 - 0.5f32.sqrt()).abs() < 1e-6, "{hits:?}");
        let mut between = axis(0);
        between[2] = 1.0;
        let middle = unit(&between);
        assert!((index.best_users(&middle, 0.9, 10)[0].1 - 1.0).abs() < 1e-6);
        let all = index.best_users(&axis(2), -1.0, 10);
        assert_eq!(
            users_of(&all),
            ["a", "b"],
            "a user without samples never matches"
        );
    }

    #[test]
    fn removal_keeps_the_rest_intact() {
        let mut index = Index::new();
        index.add_sample("a", 1, &axis(0));
        index.add_sample("b", 2, &axis(1));
        index.add_sample("a", 3, &axis(2));
        index.add_sample("c", 4, &axis(3));
        index.add_user("empty");
        assert!(index.remove_user("a"));
        assert!(!index.remove_user("a"));
        assert_eq!(index.sample_count(), 2);
        assert_eq!(index.userids(), ["b", "c", "empty"]);
        assert_eq!(users_of(&index.best_users(&axis(3), 0.5, 10)), ["c"]);
        assert_eq!(users_of(&index.best_users(&axis(1), 0.5, 10)), ["b"]);
        assert!(index.best_users(&axis(2), 0.5, 10).is_empty());

        // The user moved into the freed slot still receives its new samples.
        index.add_sample("empty", 5, &axis(4));
        assert_eq!(users_of(&index.best_users(&axis(4), 0.5, 10)), ["empty"]);
    }

    #[test]
    fn top_limits_users_best_first() {
        let mut index = Index::new();
        let mut v = axis(0);
        for (i, user) in ["x", "y", "z"].iter().enumerate() {
            v[1] = 0.1 * i as f32; // x: 1.0, y: ~0.995, z: ~0.98 against axis 0
            index.add_sample(user, i as i64, &unit(&v));
        }
        index.add_sample("far", 9, &axis(5));
        assert_eq!(users_of(&index.best_users(&axis(0), -1.0, 1)), ["x"]);
        assert_eq!(
            users_of(&index.best_users(&axis(0), -1.0, 3)),
            ["x", "y", "z"]
        );
        // The same photo under two names: the tie breaks by userid.
        index.add_sample("w", 10, &axis(0));
        assert_eq!(users_of(&index.best_users(&axis(0), -1.0, 2)), ["w", "x"]);
    }

    #[test]
    fn samples_removed_and_users_renamed_or_merged_in_place() {
        let mut index = Index::new();
        index.add_sample("a", 1, &axis(0));
        index.add_sample("b", 2, &axis(1));
        index.add_sample("a", 3, &axis(2));
        assert!(index.remove_sample(1, &axis(0)));
        assert!(!index.remove_sample(1, &axis(0)));
        assert!(index.best_users(&axis(0), 0.5, 10).is_empty());
        let only = index.best_users(&axis(2), 0.5, 10);
        assert_eq!(users_of(&only), ["a"]);
        assert!(
            (only[0].1 - 1.0).abs() < 1e-6,
            "the template is the one sample left"
        );

        assert!(index.rename_user("a", "c"));
        assert_eq!(index.userids(), ["b", "c"]);
        assert_eq!(users_of(&index.best_users(&axis(2), 0.5, 10)), ["c"]);

        assert!(index.rename_user("b", "c"), "a merge");
        assert_eq!(index.userids(), ["c"]);
        let merged = index.best_users(&axis(1), 0.5, 10);
        assert_eq!(users_of(&merged), ["c"]);
        assert!((merged[0].1 - 0.5f32.sqrt()).abs() < 1e-6, "{merged:?}");
        assert!(index.remove_sample(2, &axis(1)));
        assert!(index.remove_sample(3, &axis(2)));
        assert!(
            index.best_users(&axis(2), -1.0, 10).is_empty(),
            "a user whose samples are all gone matches nobody"
        );
        assert!(!index.rename_user("gone", "x"));
    }

    #[test]
    fn enrolment_follows_every_change() {
        let mut index = Index::new();
        assert_eq!(index.enrolment(), Enrolment::default());
        index.add_sample("a", 1, &axis(0));
        index.add_sample("b", 2, &axis(1));
        assert_eq!(index.enrolment(), Enrolment::of([1, 1]));
        index.add_sample("a", 3, &axis(2));
        assert_eq!(index.enrolment(), Enrolment::of([2, 1]));
        assert!(index.rename_user("b", "a"), "a merge");
        assert_eq!(index.enrolment(), Enrolment::of([3]));
        assert!(index.remove_sample(3, &axis(2)));
        assert_eq!(index.enrolment(), Enrolment::of([2]));
        assert!(index.remove_user("a"));
        assert_eq!(index.enrolment(), Enrolment::default());
    }

    #[test]
    fn a_face_like_a_negative_sample_is_not_given_to_that_user() {
        let mut index = Index::new();
        index.add_sample("anna", 1, &axis(0));
        index.add_sample("bob", 2, &axis(1));
        // A stranger the gallery named Anna: cosine 0.6 with her template.
        let stranger = unit(&[&[0.6f32, 0.0, 0.8][..], &[0.0; EMBEDDING_DIM - 3]].concat());
        assert_eq!(users_of(&index.best_users(&stranger, 0.5, 5)), ["anna"]);
        index.add_negative("anna", 3, &stranger);
        assert!(index.best_users(&stranger, 0.5, 5).is_empty());
        assert_eq!(index.sample_count(), 2, "a negative is no sample");
        assert_eq!(index.negative_count(), 1);
        assert_eq!(index.enrolment(), Enrolment::of([1, 1]));
        // Anna's own face resembles her template more than the stranger: still hers.
        assert_eq!(users_of(&index.best_users(&axis(0), 0.5, 5)), ["anna"]);
        // Only Anna is vetoed: the next user may take the face.
        let near_both = unit(&[&[0.5f32, 0.45, 0.6][..], &[0.0; EMBEDDING_DIM - 3]].concat());
        assert_eq!(users_of(&index.best_users(&near_both, 0.3, 5)), ["bob"]);
        assert!(index.has_sample(3));
        assert!(index.remove_sample(3, &stranger));
        assert!(!index.has_sample(3));
        assert_eq!(users_of(&index.best_users(&stranger, 0.5, 5)), ["anna"]);
    }

    #[test]
    fn negative_samples_follow_renames_merges_and_removals() {
        let mut index = Index::new();
        let stranger = unit(&[&[0.6f32, 0.0, 0.8][..], &[0.0; EMBEDDING_DIM - 3]].concat());
        index.add_sample("gone", 9, &axis(5));
        index.add_sample("anna", 1, &axis(0));
        index.add_negative("anna", 3, &stranger);
        index.add_sample("a2", 2, &axis(0));
        // Anna moves into the slot "gone" frees: her negative moves with her.
        assert!(index.remove_user("gone"));
        assert_eq!(users_of(&index.best_users(&stranger, 0.5, 5)), ["a2"]);
        assert!(index.rename_user("anna", "anne"));
        assert_eq!(users_of(&index.best_users(&stranger, 0.5, 5)), ["a2"]);
        // Merged into a2: a2 now carries the negative.
        assert!(index.rename_user("anne", "a2"));
        assert!(index.best_users(&stranger, 0.5, 5).is_empty());
        assert!(
            index.remove_sample(3, &stranger),
            "still found by id after the merge"
        );
        assert_eq!(users_of(&index.best_users(&stranger, 0.5, 5)), ["a2"]);
        index.add_negative("a2", 4, &stranger);
        assert!(index.remove_user("a2"));
        assert!(!index.has_sample(4));
        assert_eq!(index.negative_count(), 0);
    }

    #[test]
    fn wrong_query_length_matches_nobody() {
        let mut index = Index::new();
        index.add_sample("a", 1, &axis(0));
        assert!(index.best_users(&[1.0; 3], -1.0, 5).is_empty());
    }
}
