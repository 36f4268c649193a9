//! Stage 5: embeddings -> identities. Each registered user is given to at most one face of a
//! photo (the confidences come from `calibration`, measured against the gallery).

/// For each face, the user it is given and that user's confidence, or `None` (unknown).
///
/// `candidates[f]` lists (user, confidence) for face `f`, any order. Pairs are taken best
/// confidence first; a user already given to a face is skipped, so the best-scoring face
/// wins a user and the others fall back to their next candidate, or to unknown below
/// `threshold`. Ties break by face order, then user, so the answer is deterministic.
pub fn assign_users<U: Clone + Ord>(
    candidates: &[Vec<(U, f32)>],
    threshold: f32,
) -> Vec<Option<(U, f32)>> {
    let mut pairs: Vec<(usize, &U, f32)> = candidates
        .iter()
        .enumerate()
        .flat_map(|(f, list)| list.iter().map(move |(u, c)| (f, u, *c)))
        .filter(|&(_, _, c)| c >= threshold)
        .collect();
    pairs.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)).then(a.1.cmp(b.1)));
    let mut result: Vec<Option<(U, f32)>> = vec![None; candidates.len()];
    let mut taken: Vec<&U> = Vec::new();
    for (f, u, c) in pairs {
        if result[f].is_none() && !taken.contains(&u) {
            result[f] = Some((u.clone(), c));
            taken.push(u);
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_goes_to_its_best_face_only() {
        let candidates = vec![
            vec![("ann", 0.80), ("bob", 0.75)],
            vec![("ann", 0.90), ("bob", 0.50)],
            vec![("ann", 0.70)],
        ];
        let got = assign_users(&candidates, 0.67);
        assert_eq!(got, vec![Some(("bob", 0.75)), Some(("ann", 0.90)), None]);
    }

    #[test]
    fn nothing_below_the_threshold() {
        let got = assign_users(&[vec![("ann", 0.5)]], 0.67);
        assert_eq!(got, vec![None]);
    }
}
