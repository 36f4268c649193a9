//! Strangers grouped as they arrive: each unknown face joins the group whose mean embedding
//! is nearest, if its cosine with that mean reaches [`STRANGER_GROUP_COSINE`], else it starts
//! a group of its own. One pass, no re-clustering, so a face's group never changes after it
//! is stored. The recorder keeps the groups in memory and the stores bring them up to date at
//! every batch ([`StrangerGroups::catch_up`]): groups whose faces are all gone are forgotten,
//! faces stored since (at start: all of them; with PostgreSQL: other nodes' too) are added.
//! `deepstack-eval` measures purity and groups per person on celeba-dev (the
//! threshold tuned on the calibration half of its people, reported on the other).

use crate::gallery::EMBEDDING_DIM;

/// The cosine with a group's mean a face needs to join it. Chosen on celeba-dev's calibration
/// half (`deepstack-eval evaluate`, "Strangers grouped"): both targets (purity >= 90%, at most
/// 1.5 groups per person) hold there from 0.36 to 0.38, and this is the middle; the figures on
/// the other half are in BENCHMARKS.md.
pub const STRANGER_GROUP_COSINE: f32 = 0.37;

/// The groups one recorder knows, by id.
#[derive(Debug, Default)]
pub struct StrangerGroups {
    groups: Vec<Group>,
    /// The newest face id added.
    seen_up_to: i64,
}

/// Where a face goes when it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// Recognize named it: no group.
    Named,
    /// The group of that id.
    Join(i64),
    /// A group of its own, whose id is the face's.
    Start,
}

impl Placement {
    /// The group id stored with the face (a started group's is set once the face has an id).
    pub fn group_id(self) -> Option<i64> {
        match self {
            Placement::Join(id) => Some(id),
            Placement::Named | Placement::Start => None,
        }
    }
}

#[derive(Debug)]
struct Group {
    id: i64,
    /// Sum of the members' unit embeddings; its direction is the mean's.
    sum: [f32; EMBEDDING_DIM],
    /// Its length, kept so a cosine is one dot product and one division.
    norm: f32,
}

impl StrangerGroups {
    /// The group `embedding` (unit length) joins at `threshold`, or `None`: it starts one.
    pub fn nearest(&self, embedding: &[f32], threshold: f32) -> Option<i64> {
        let mut best = None;
        let mut best_cos = threshold;
        for g in &self.groups {
            let dot: f32 = g.sum.iter().zip(embedding).map(|(a, b)| a * b).sum();
            let cos = dot / g.norm.max(f32::MIN_POSITIVE);
            if cos >= best_cos {
                best_cos = cos;
                best = Some(g.id);
            }
        }
        best
    }

    /// Adds `embedding` to group `id` (created if new).
    pub fn add(&mut self, id: i64, embedding: &[f32]) {
        let at = match self.groups.iter().position(|g| g.id == id) {
            Some(at) => at,
            None => {
                self.groups.push(Group {
                    id,
                    sum: [0.0; EMBEDDING_DIM],
                    norm: 0.0,
                });
                self.groups.len() - 1
            }
        };
        let g = &mut self.groups[at];
        for (s, e) in g.sum.iter_mut().zip(embedding) {
            *s += e;
        }
        g.norm = g.sum.iter().map(|s| s * s).sum::<f32>().sqrt();
    }

    /// Forgets groups that no kept face belongs to any more.
    pub fn retain(&mut self, mut kept: impl FnMut(i64) -> bool) {
        self.groups.retain(|g| kept(g.id));
    }

    /// Brings the groups up to what the store holds: `kept` are the groups that still have a
    /// face, `stored` the grouped faces (id, group, embedding) stored after
    /// [`StrangerGroups::seen_up_to`], in id order.
    pub fn catch_up(
        &mut self,
        kept: &[i64],
        stored: impl IntoIterator<Item = (i64, i64, Vec<f32>)>,
    ) {
        let mut kept = kept.to_vec();
        kept.sort_unstable();
        self.retain(|id| kept.binary_search(&id).is_ok());
        for (id, group, embedding) in stored {
            self.add(group, &embedding);
            self.seen_up_to = self.seen_up_to.max(id);
        }
    }

    /// The newest face id the groups hold.
    pub fn seen_up_to(&self) -> i64 {
        self.seen_up_to
    }

    /// Where a face recognize answered `userid` for goes, by its unit `embedding`.
    pub fn place(&self, userid: Option<&str>, embedding: &[f32]) -> Placement {
        if userid.is_some() {
            return Placement::Named;
        }
        match self.nearest(embedding, STRANGER_GROUP_COSINE) {
            Some(id) => Placement::Join(id),
            None => Placement::Start,
        }
    }

    /// Records that the face placed at `placement` was stored as `id`; true when it started
    /// a group, whose id the store then sets to `id`.
    pub fn placed(&mut self, id: i64, placement: Placement, embedding: &[f32]) -> bool {
        self.seen_up_to = self.seen_up_to.max(id);
        match placement {
            Placement::Named => false,
            Placement::Join(group) => {
                self.add(group, embedding);
                false
            }
            Placement::Start => {
                self.add(id, embedding);
                true
            }
        }
    }

    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}

/// Groups `faces` (unit embeddings, in arrival order) at `threshold`: each face's group index.
pub fn group_all(faces: &[&[f32]], threshold: f32) -> Vec<usize> {
    let mut groups = StrangerGroups::default();
    faces
        .iter()
        .map(|f| {
            let id = groups.nearest(f, threshold).unwrap_or(groups.len() as i64);
            groups.add(id, f);
            id as usize
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(seed: usize) -> Vec<f32> {
        let mut v = vec![0.0; EMBEDDING_DIM];
        v[seed % EMBEDDING_DIM] = 1.0;
        v
    }

    fn blend(a: &[f32], b: &[f32], t: f32) -> Vec<f32> {
        let v: Vec<f32> = a
            .iter()
            .zip(b)
            .map(|(x, y)| x * (1.0 - t) + y * t)
            .collect();
        let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        v.into_iter().map(|x| x / n).collect()
    }

    #[test]
    fn near_faces_share_a_group_and_far_ones_start_their_own() {
        let (a, b) = (unit(0), unit(1));
        let a2 = blend(&a, &unit(2), 0.3); // cosine 0.92 with a
        let b2 = blend(&b, &unit(3), 0.3);
        let faces: Vec<&[f32]> = vec![&a, &b, &a2, &b2, &a];
        assert_eq!(group_all(&faces, STRANGER_GROUP_COSINE), [0, 1, 0, 1, 0]);
        // At a threshold no two different faces reach, every face but the repeat is alone.
        assert_eq!(group_all(&faces, 0.999), [0, 1, 2, 3, 0]);
    }

    #[test]
    fn forgotten_groups_take_no_more_faces() {
        let mut groups = StrangerGroups::default();
        groups.add(7, &unit(0));
        assert_eq!(groups.nearest(&unit(0), 0.5), Some(7));
        groups.retain(|id| id != 7);
        assert!(groups.is_empty());
        assert_eq!(groups.nearest(&unit(0), 0.5), None);
    }
}
