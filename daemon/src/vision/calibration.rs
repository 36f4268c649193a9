//! Measured constants that turn raw model scores into DeepStack's 0..1 confidences.
//!
//! Regenerate with `deepstack-eval calibrate ../shared/testdata/celeba-dev` (see README), which
//! prints this block with the figures it came from. Both maps are piecewise linear through
//! their knots, and therefore monotone.

/// (SFace cosine, recognition confidence) knots.
///
/// Derived by `deepstack-eval calibrate` on celeba-dev (120 people, 1,426 photos, mode
/// Medium; 7,767 genuine and 1,006,833 impostor pairs):
/// - 0.45 (what Home Assistant always sends) at the impostor cosine p99 = 0.3057: a 1%
///   false-accept rate (target < 2%; the margin is for people the set never saw);
/// - 0.67 (DeepStack's default) at the impostor p99.95 = 0.3964: 0.05% (target <= 0.1%);
/// - 0.85 at the genuine median = 0.5966: the typical same-person score (target >= 0.8).
pub const RECOGNITION_KNOTS: [(f32, f32); 5] = [
    (-1.0, 0.0),
    (0.3057, 0.45),
    (0.3964, 0.67),
    (0.5966, 0.85),
    (1.0, 1.0),
];

/// (YuNet score, detection confidence) knots: DeepStack's 0.55 (normal) and 0.8 (strict).
///
/// Same run: 99% of the labelled faces score >= 0.5247 (-> 0.55, the best detection on the
/// people-free negatives scored 0.424) and 90% score >= 0.9139 (-> 0.8, the strict
/// threshold of match, which wants clear frontal faces).
pub const DETECTION_KNOTS: [(f32, f32); 4] =
    [(0.0, 0.0), (0.5247, 0.55), (0.9139, 0.80), (1.0, 1.0)];

/// DeepStack's default detection threshold (recognize and detect).
pub const DEFAULT_DETECTION_CONFIDENCE: f32 = 0.55;
/// The strict detection threshold DeepStack's match uses.
pub const STRICT_DETECTION_CONFIDENCE: f32 = 0.8;
/// DeepStack's default recognition threshold.
pub const DEFAULT_RECOGNITION_CONFIDENCE: f32 = 0.67;

/// Piecewise-linear interpolation through increasing knots, clamped at both ends.
fn interpolate(knots: &[(f32, f32)], x: f32) -> f32 {
    let (first, last) = (knots[0], knots[knots.len() - 1]);
    if x.is_nan() || x <= first.0 {
        return first.1;
    }
    if x >= last.0 {
        return last.1;
    }
    for pair in knots.windows(2) {
        let ((x0, y0), (x1, y1)) = (pair[0], pair[1]);
        if x <= x1 {
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0);
        }
    }
    last.1
}

/// Recognition confidence (0..1) for an SFace cosine similarity.
pub fn recognition_confidence(cosine: f32) -> f32 {
    interpolate(&RECOGNITION_KNOTS, cosine)
}

/// The lowest cosine whose recognition confidence can reach `confidence` (a little below the
/// exact inverse, so float rounding never drops a user that reaches it).
pub fn recognition_cosine_for(confidence: f32) -> f32 {
    let swapped: Vec<(f32, f32)> = RECOGNITION_KNOTS.iter().map(|&(c, r)| (r, c)).collect();
    interpolate(&swapped, confidence) - 1e-4
}

/// Detection confidence (0..1, DeepStack's scale) for a YuNet score.
pub fn detection_confidence(score: f32) -> f32 {
    interpolate(&DETECTION_KNOTS, score)
}

/// The YuNet score at which the detection confidence reaches `confidence`.
pub fn detection_score_for(confidence: f32) -> f32 {
    let swapped: Vec<(f32, f32)> = DETECTION_KNOTS.iter().map(|&(s, c)| (c, s)).collect();
    interpolate(&swapped, confidence)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_recognition_inverse_never_excludes_a_reaching_cosine() {
        for i in 0..=2000 {
            let cosine = -1.0 + i as f32 / 1000.0;
            let confidence = recognition_confidence(cosine);
            assert!(
                recognition_cosine_for(confidence) <= cosine,
                "cosine {cosine}"
            );
        }
        assert!(recognition_cosine_for(0.0) <= -1.0);
    }

    #[test]
    fn maps_are_monotone_and_hit_their_knots() {
        for knots in [&RECOGNITION_KNOTS[..], &DETECTION_KNOTS[..]] {
            assert!(knots
                .windows(2)
                .all(|p| p[0].0 < p[1].0 && p[0].1 <= p[1].1));
            for &(x, y) in knots {
                assert!((interpolate(knots, x) - y).abs() < 1e-6);
            }
        }
        let mut last = -1.0;
        for i in -100..=100 {
            let c = recognition_confidence(i as f32 / 100.0);
            assert!(c >= last && (0.0..=1.0).contains(&c));
            last = c;
        }
        for c in [0.3, 0.55, 0.8, 0.95] {
            assert!((detection_confidence(detection_score_for(c)) - c).abs() < 1e-5);
        }
        assert_eq!(recognition_confidence(f32::NAN), 0.0);
    }
}
