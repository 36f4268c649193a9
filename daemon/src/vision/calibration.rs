//! Measured constants that turn raw model scores into DeepStack's 0..1 confidences.
//!
//! Regenerate with `deepstack-eval calibrate ../shared/testdata/celeba-dev` (see README), which
//! derives every constant below from the calibration half of the set's people and prints this
//! block with the figures it came from; `deepstack-eval evaluate` reports on the other half.
//!
//! # What a recognition confidence means
//!
//! Recognition is open-set and 1:N: a stranger at the door is compared with every sample of
//! every enrolled person and only has to resemble one of them. So the confidence is defined by
//! the question a camera asks, not by the cosine of one pair:
//!
//! > at `min_confidence` c, at most FPIR(c) of the strangers (people not enrolled) are given a
//! > name, whatever the gallery holds: c = 0.45 -> 2%, 0.67 -> 0.5%, 0.8 -> 0.1%
//!
//! ([`CONFIDENCE_KNOTS`]; FPIR is the false-positive identification rate). For a best cosine
//! `t` against a gallery, the share of strangers that reach `t` is bounded by
//! `p(t) * comparisons`: `p(t)` is the chance that one stranger's face reaches `t` against one
//! sample ([`IMPOSTOR_TAIL`]), and `comparisons` is `sum over users of samples^k`
//! ([`SAMPLES_EXPONENT`]; one person's photos resemble each other, so a user's k samples add
//! less than k independent chances). The confidence is that bound mapped through
//! [`CONFIDENCE_KNOTS`]: it falls as the gallery grows, for the same cosine, because the same
//! resemblance is then less surprising. `/match` is the gallery of one sample.

/// Upper tail of the stranger cosine: `(cosine, log10 P(one stranger's face reaches it against
/// one registered sample))`, increasing cosines, piecewise linear in log10. The last knot, at
/// cosine 1, extends the measured ones with 0.75 of the slope of the last four: an exponential
/// tail, heavier than the Gaussian-like one the measured knots follow, so that beyond the data
/// it errs towards naming fewer.
///
/// Derived by `deepstack-eval calibrate` on celeba-dev's calibration half (60 people; 472,685
/// colour and 470,677 grayscale-probe stranger pairs), at each rate the higher cosine of the
/// two kinds of probe.
pub const IMPOSTOR_TAIL: [(f32, f32); 11] = [
    (-1.0000, 0.000),
    (0.0978, -0.300),
    (0.1415, -0.500),
    (0.2149, -1.000),
    (0.2683, -1.500),
    (0.3112, -2.000),
    (0.3477, -2.500),
    (0.3767, -3.000),
    (0.4033, -3.500),
    (0.4300, -4.000),
    (1.0000, -11.818),
];

/// How a user's samples add up: `comparisons = sum over users of samples^SAMPLES_EXPONENT`.
/// One person's photos resemble each other, so 3 samples are fewer than 3 independent chances
/// for a stranger (an exponent of 1 would be the union bound).
///
/// Same run: the largest exponent measured for 2 to 5 samples at single-sample rates of 1e-2
/// to 1e-3 (0.77 to 0.90; it grows towards the tail).
pub const SAMPLES_EXPONENT: f32 = 0.941;

/// `(log10 of the share of strangers named, confidence)`, increasing shares: the definition.
/// The thresholds clients send sit on knots (Home Assistant's 0.45, DeepStack's 0.67, and 0.8)
/// at [`MARGIN`] times the share the definition allows them (2%, 0.5%, 0.1%); 0.95 is about
/// one stranger in a million.
pub const CONFIDENCE_KNOTS: [(f32, f32); 7] = [
    (-9.0, 1.0),
    (-6.0, 0.95),
    (-3.096_91, 0.80), // log10(0.08%)
    (-2.397_94, 0.67), // log10(0.4%)
    (-1.795_88, 0.45), // log10(1.6%)
    (-1.0, 0.2),
    (0.0, 0.0),
];

/// The knots aim at this fraction of the allowed shares: out of sample, on people the
/// calibration never saw, the measured share moved by up to 20% around the estimate.
pub const MARGIN: f64 = 0.8;

/// (YuNet score, detection confidence) knots: DeepStack's 0.55 (normal) and 0.8 (strict).
///
/// Derived by `deepstack-eval calibrate` on celeba-dev: 99% of the labelled faces score >=
/// 0.5247 (-> 0.55, the best detection on the people-free negatives scored 0.424) and 90% score
/// >= 0.9139 (-> 0.8, DeepStack's strict confidence).
pub const DETECTION_KNOTS: [(f32, f32); 4] =
    [(0.0, 0.0), (0.5247, 0.55), (0.9139, 0.80), (1.0, 1.0)];

/// The YuNet score a face needs for `/match`: every clear face, grayscale ones too, but not
/// the best "face" YuNet sees in a people-free photo. `deepstack-eval calibrate` takes the
/// score 99.5% of the calibration half's labelled faces reach in colour and in grayscale
/// (0.3236), raised to 0.025 above the best detection on the negatives (scikit-image's coffee
/// cup at 0.375; its cat scores 0.345). At 0.40, 99.30% of celeba-dev's faces are found in
/// colour and 99.23% in grayscale; DeepStack's strict 0.8 (the score 90% reach) refused one LFW
/// pair in four.
pub const MATCH_MIN_SCORE: f32 = 0.40;

/// DeepStack's default detection threshold (recognize and detect).
pub const DEFAULT_DETECTION_CONFIDENCE: f32 = 0.55;
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

/// The same knots with their two coordinates swapped, in increasing order of the new x.
fn inverted(knots: &[(f32, f32)]) -> Vec<(f32, f32)> {
    let mut swapped: Vec<(f32, f32)> = knots.iter().map(|&(x, y)| (y, x)).collect();
    swapped.sort_by(|a, b| a.0.total_cmp(&b.0));
    swapped
}

/// log10 of the chance that one stranger's face reaches `cosine` against one sample.
pub fn log10_stranger_rate(cosine: f32) -> f32 {
    if cosine.is_nan() {
        return 0.0;
    }
    interpolate(&IMPOSTOR_TAIL, cosine)
}

/// The gallery's `comparisons` for users with the given sample counts (see the module doc).
pub fn comparisons(samples_per_user: impl IntoIterator<Item = usize>) -> f64 {
    samples_per_user
        .into_iter()
        .filter(|&k| k > 0)
        .map(|k| (k as f64).powf(SAMPLES_EXPONENT as f64))
        .sum()
}

/// Recognition confidence (0..1) of a best cosine `cosine` found in a gallery of
/// `comparisons` (see [`comparisons`]; `/match` is 1): the definition's map of the share of
/// strangers that would reach it. Non-decreasing in `cosine`, non-increasing in `comparisons`.
pub fn recognition_confidence(cosine: f32, comparisons: f64) -> f32 {
    if cosine.is_nan() {
        return 0.0;
    }
    let log_share = (log10_stranger_rate(cosine) + comparisons.max(1.0).log10() as f32).min(0.0);
    interpolate(&CONFIDENCE_KNOTS, log_share)
}

/// The lowest cosine whose recognition confidence can reach `confidence` in a gallery of
/// `comparisons` (a little below the exact inverse, so float rounding never drops a user that
/// reaches it).
pub fn recognition_cosine_for(confidence: f32, comparisons: f64) -> f32 {
    if confidence <= 0.0 {
        return -1.0 - 1e-4;
    }
    let log_share = interpolate(&inverted(&CONFIDENCE_KNOTS), confidence);
    let log_rate = log_share - comparisons.max(1.0).log10() as f32;
    interpolate(&inverted(&IMPOSTOR_TAIL), log_rate) - 1e-4
}

/// Detection confidence (0..1, DeepStack's scale) for a YuNet score.
pub fn detection_confidence(score: f32) -> f32 {
    interpolate(&DETECTION_KNOTS, score)
}

/// The YuNet score at which the detection confidence reaches `confidence`.
pub fn detection_score_for(confidence: f32) -> f32 {
    interpolate(&inverted(&DETECTION_KNOTS), confidence)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GALLERIES: [f64; 6] = [1.0, 3.0, 30.0, 300.0, 3e4, 1e5];

    #[test]
    fn the_recognition_inverse_never_excludes_a_reaching_cosine() {
        for &n in &GALLERIES {
            for i in 0..=2000 {
                let cosine = -1.0 + i as f32 / 1000.0;
                let confidence = recognition_confidence(cosine, n);
                assert!(
                    recognition_cosine_for(confidence, n) <= cosine,
                    "cosine {cosine}, gallery {n}"
                );
            }
            assert!(recognition_cosine_for(0.0, n) <= -1.0);
        }
    }

    #[test]
    fn knots_are_monotone_and_hit() {
        for knots in [
            &IMPOSTOR_TAIL[..],
            &CONFIDENCE_KNOTS[..],
            &DETECTION_KNOTS[..],
        ] {
            assert!(knots.windows(2).all(|p| p[0].0 < p[1].0), "{knots:?}");
            for &(x, y) in knots {
                assert!((interpolate(knots, x) - y).abs() < 1e-6);
            }
        }
        assert!(IMPOSTOR_TAIL.windows(2).all(|p| p[0].1 > p[1].1));
        assert!(CONFIDENCE_KNOTS.windows(2).all(|p| p[0].1 > p[1].1));
        assert_eq!(IMPOSTOR_TAIL[IMPOSTOR_TAIL.len() - 1].0, 1.0);
        for c in [0.3, 0.55, 0.8, 0.95] {
            assert!((detection_confidence(detection_score_for(c)) - c).abs() < 1e-5);
        }
    }

    #[test]
    fn confidence_is_bounded_rises_with_the_cosine_and_falls_as_the_gallery_grows() {
        for &n in &GALLERIES {
            let mut last = 0.0;
            for i in -100..=100 {
                let c = recognition_confidence(i as f32 / 100.0, n);
                assert!(
                    (0.0..=1.0).contains(&c) && c >= last,
                    "cosine {i}/100, gallery {n}"
                );
                last = c;
            }
            assert_eq!(recognition_confidence(-1.0, n), 0.0);
            assert_eq!(recognition_confidence(f32::NAN, n), 0.0);
        }
        for i in -100..=100 {
            let cosine = i as f32 / 100.0;
            let by_size: Vec<f32> = GALLERIES
                .iter()
                .map(|&n| recognition_confidence(cosine, n))
                .collect();
            assert!(
                by_size.windows(2).all(|p| p[0] >= p[1]),
                "{cosine}: {by_size:?}"
            );
        }
        // A resemblance that names someone in a small gallery is no longer enough in a large
        // one: the cosine that reaches 0.67 rises with the gallery.
        let needed: Vec<f32> = GALLERIES
            .iter()
            .map(|&n| recognition_cosine_for(DEFAULT_RECOGNITION_CONFIDENCE, n))
            .collect();
        assert!(needed.windows(2).all(|p| p[0] < p[1]), "{needed:?}");
    }

    #[test]
    fn thresholds_sit_at_their_share_of_strangers() {
        // At the cosine a threshold needs, the stranger rate times the gallery is the share
        // the definition states.
        for (confidence, allowed) in [(0.45f32, 0.02f64), (0.67, 0.005), (0.8, 0.001)] {
            let share = allowed * MARGIN;
            for &n in &GALLERIES[..4] {
                let cosine = recognition_cosine_for(confidence, n) + 1e-4;
                let at = 10f64.powf(log10_stranger_rate(cosine) as f64) * n;
                assert!((at / share - 1.0).abs() < 0.02, "{confidence} {n}: {at}");
            }
        }
    }

    #[test]
    fn samples_of_one_user_count_less_than_independent_ones() {
        assert_eq!(comparisons([1, 1, 1]), 3.0);
        assert!(comparisons([3]) <= 3.0 && comparisons([3]) >= 1.0);
        assert_eq!(comparisons([0, 2]), comparisons([2]));
    }
}
