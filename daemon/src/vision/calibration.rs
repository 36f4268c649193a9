//! Measured constants that turn raw model scores into DeepStack's 0..1 confidences.
//!
//! Regenerate with `deepstack-eval calibrate ../shared/testdata/celeba-dev` (see README), which
//! derives every constant below from the calibration half of the set's people and prints this
//! block with the figures it came from; `deepstack-eval evaluate` reports on the other half.
//!
//! # What a recognition confidence means
//!
//! Recognition is open-set and 1:N: a stranger at the door is compared with every enrolled
//! person and only has to resemble one of them. So the confidence is defined by the question a
//! camera asks, not by the cosine of one pair:
//!
//! > at `min_confidence` c, at most FPIR(c) of the strangers (people not enrolled) are given a
//! > name, whatever the gallery holds: c = 0.45 -> 2%, 0.67 -> 0.5%, 0.8 -> 0.1%
//!
//! ([`CONFIDENCE_KNOTS`]; FPIR is the false-positive identification rate). A face is scored
//! against each user's template, the normalised mean of the user's samples (it ranks better
//! than the best single sample: fewer strangers reach a template, more of the person's own
//! photos do). For a best template cosine `t`, the share of strangers that reach `t` is
//! bounded by `sum over users of p_k(t)`: `p_k(t)` is the chance that one stranger's face
//! reaches `t` against the template of a user with k samples ([`IMPOSTOR_TAILS`]; the mean
//! of more photos resembles more faces a little, so the tail moves up with k). The confidence
//! is that bound mapped through [`CONFIDENCE_KNOTS`]: it falls as the gallery grows, for the
//! same cosine, because the same resemblance is then less surprising. `/match` is the gallery
//! of one user with one sample.

/// The tails of [`IMPOSTOR_TAILS`]: one per sample count, the last for that many or more.
pub const SAMPLE_TAILS: usize = 5;

/// Upper tails of the stranger cosine, one for each number of samples a user has (1, 2, 3, 4,
/// 5 or more): `(cosine, log10 P(one stranger's face reaches it against the template of one
/// user with that many samples))`, increasing cosines, piecewise linear in log10. The last
/// knot, at cosine 1, extends the measured ones with 0.75 of the slope of the last four: an
/// exponential tail, heavier than the Gaussian-like one the measured knots follow, so that
/// beyond the data it errs towards naming fewer.
///
/// Derived by `deepstack-eval calibrate` on celeba-dev's calibration half (60 people; for
/// one sample 467,233 colour and 465,237 grayscale-probe stranger scores, for 2 to 5 samples
/// 415,360 and 413,590 against 10 random templates a person), at each rate the higher cosine
/// of the two kinds of probe.
pub const IMPOSTOR_TAILS: [&[(f32, f32)]; SAMPLE_TAILS] = [
    &[
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
    ],
    &[
        (-1.0000, 0.000),
        (0.1088, -0.300),
        (0.1523, -0.500),
        (0.2269, -1.000),
        (0.2808, -1.500),
        (0.3246, -2.000),
        (0.3615, -2.500),
        (0.3919, -3.000),
        (0.4187, -3.500),
        (0.4440, -4.000),
        (1.0000, -11.582),
    ],
    &[
        (-1.0000, 0.000),
        (0.1154, -0.300),
        (0.1586, -0.500),
        (0.2329, -1.000),
        (0.2880, -1.500),
        (0.3319, -2.000),
        (0.3694, -2.500),
        (0.4016, -3.000),
        (0.4303, -3.500),
        (0.4571, -4.000),
        (1.0000, -10.959),
    ],
    &[
        (-1.0000, 0.000),
        (0.1178, -0.300),
        (0.1613, -0.500),
        (0.2361, -1.000),
        (0.2918, -1.500),
        (0.3364, -2.000),
        (0.3740, -2.500),
        (0.4065, -3.000),
        (0.4355, -3.500),
        (0.4628, -4.000),
        (1.0000, -10.813),
    ],
    &[
        (-1.0000, 0.000),
        (0.1197, -0.300),
        (0.1631, -0.500),
        (0.2385, -1.000),
        (0.2946, -1.500),
        (0.3393, -2.000),
        (0.3771, -2.500),
        (0.4101, -3.000),
        (0.4398, -3.500),
        (0.4697, -4.000),
        (1.0000, -10.460),
    ],
];

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

/// How many users of a gallery have 1, 2, 3, 4, and 5 or more samples: what a best cosine's
/// recognition confidence is measured against (see the module doc).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Enrolment([usize; SAMPLE_TAILS]);

impl Enrolment {
    /// One user with one sample: `/match`'s gallery.
    pub const ONE_SAMPLE: Enrolment = Enrolment([1, 0, 0, 0, 0]);

    /// The enrolment of users with the given sample counts (users without samples match
    /// nobody and do not count).
    pub fn of(samples_per_user: impl IntoIterator<Item = usize>) -> Self {
        let mut users = [0; SAMPLE_TAILS];
        for k in samples_per_user.into_iter().filter(|&k| k > 0) {
            users[k.min(SAMPLE_TAILS) - 1] += 1;
        }
        Enrolment(users)
    }

    /// Users with at least one sample.
    pub fn users(&self) -> usize {
        self.0.iter().sum()
    }

    /// log10 of the share of strangers whose face reaches `cosine` against some user's
    /// template (at most 0; an empty gallery counts as [`Enrolment::ONE_SAMPLE`]).
    pub fn log10_stranger_share(&self, cosine: f32) -> f32 {
        if cosine.is_nan() {
            return 0.0;
        }
        let users = if self.users() == 0 {
            Self::ONE_SAMPLE.0
        } else {
            self.0
        };
        let share: f64 = users
            .iter()
            .enumerate()
            .filter(|(_, &n)| n > 0)
            .map(|(k, &n)| n as f64 * 10f64.powf(log10_stranger_rate(cosine, k + 1) as f64))
            .sum();
        (share.log10() as f32).min(0.0)
    }
}

/// log10 of the chance that one stranger's face reaches `cosine` against the template of one
/// user with `samples` samples.
pub fn log10_stranger_rate(cosine: f32, samples: usize) -> f32 {
    if cosine.is_nan() {
        return 0.0;
    }
    interpolate(IMPOSTOR_TAILS[samples.clamp(1, SAMPLE_TAILS) - 1], cosine)
}

/// Recognition confidence (0..1) of a best template cosine `cosine` found in a gallery of
/// `enrolment` (`/match`: [`Enrolment::ONE_SAMPLE`]): the definition's map of the share of
/// strangers that would reach it. Non-decreasing in `cosine`, non-increasing as users or
/// samples are added.
pub fn recognition_confidence(cosine: f32, enrolment: &Enrolment) -> f32 {
    if cosine.is_nan() {
        return 0.0;
    }
    interpolate(&CONFIDENCE_KNOTS, enrolment.log10_stranger_share(cosine))
}

/// The lowest cosine whose recognition confidence can reach `confidence` in a gallery of
/// `enrolment` (a little below the exact inverse, so float rounding never drops a user that
/// reaches it).
pub fn recognition_cosine_for(confidence: f32, enrolment: &Enrolment) -> f32 {
    if confidence <= 0.0 {
        return -1.0 - 1e-4;
    }
    let log_share = interpolate(&inverted(&CONFIDENCE_KNOTS), confidence);
    // The share falls as the cosine rises: bisect for where it crosses.
    let (mut low, mut high) = (-1.0f32, 1.0f32);
    if enrolment.log10_stranger_share(low) <= log_share {
        return low - 1e-4;
    }
    for _ in 0..40 {
        let mid = 0.5 * (low + high);
        if enrolment.log10_stranger_share(mid) <= log_share {
            high = mid;
        } else {
            low = mid;
        }
    }
    low - 1e-4
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

    /// Galleries from one sample to 100,000, smallest first: each holds the one before.
    fn galleries() -> Vec<Enrolment> {
        vec![
            Enrolment::ONE_SAMPLE,
            Enrolment::of([3]),
            Enrolment::of([3, 3, 3]),
            Enrolment::of([1; 3].into_iter().chain([3; 30])),
            Enrolment::of([1; 3].into_iter().chain([3; 300])),
            Enrolment::of([1; 3].into_iter().chain([3; 300]).chain([20; 5000])),
        ]
    }

    #[test]
    fn the_recognition_inverse_never_excludes_a_reaching_cosine() {
        for g in &galleries() {
            for i in 0..=2000 {
                let cosine = -1.0 + i as f32 / 1000.0;
                let confidence = recognition_confidence(cosine, g);
                assert!(
                    recognition_cosine_for(confidence, g) <= cosine,
                    "cosine {cosine}, gallery {g:?}"
                );
            }
            assert!(recognition_cosine_for(0.0, g) <= -1.0);
        }
    }

    #[test]
    fn knots_are_monotone_and_hit() {
        for knots in IMPOSTOR_TAILS
            .iter()
            .copied()
            .chain([&CONFIDENCE_KNOTS[..], &DETECTION_KNOTS[..]])
        {
            assert!(knots.windows(2).all(|p| p[0].0 < p[1].0), "{knots:?}");
            for &(x, y) in knots {
                assert!((interpolate(knots, x) - y).abs() < 1e-6);
            }
        }
        for tail in IMPOSTOR_TAILS {
            assert!(tail.windows(2).all(|p| p[0].1 > p[1].1), "{tail:?}");
            assert_eq!(tail[tail.len() - 1].0, 1.0);
        }
        assert!(CONFIDENCE_KNOTS.windows(2).all(|p| p[0].1 > p[1].1));
        for c in [0.3, 0.55, 0.8, 0.95] {
            assert!((detection_confidence(detection_score_for(c)) - c).abs() < 1e-5);
        }
    }

    #[test]
    fn confidence_is_bounded_rises_with_the_cosine_and_falls_as_the_gallery_grows() {
        let galleries = galleries();
        for g in &galleries {
            let mut last = 0.0;
            for i in -100..=100 {
                let c = recognition_confidence(i as f32 / 100.0, g);
                assert!(
                    (0.0..=1.0).contains(&c) && c >= last,
                    "cosine {i}/100, gallery {g:?}"
                );
                last = c;
            }
            assert_eq!(recognition_confidence(-1.0, g), 0.0);
            assert_eq!(recognition_confidence(f32::NAN, g), 0.0);
        }
        for i in -100..=100 {
            let cosine = i as f32 / 100.0;
            let by_size: Vec<f32> = galleries
                .iter()
                .map(|g| recognition_confidence(cosine, g))
                .collect();
            assert!(
                by_size.windows(2).all(|p| p[0] >= p[1]),
                "{cosine}: {by_size:?}"
            );
        }
        // A resemblance that names someone in a small gallery is no longer enough in a large
        // one: the cosine that reaches 0.67 rises with the gallery.
        let needed: Vec<f32> = galleries
            .iter()
            .map(|g| recognition_cosine_for(DEFAULT_RECOGNITION_CONFIDENCE, g))
            .collect();
        assert!(needed.windows(2).all(|p| p[0] < p[1]), "{needed:?}");
        assert_eq!(
            recognition_confidence(0.5, &Enrolment::default()),
            recognition_confidence(0.5, &Enrolment::ONE_SAMPLE),
        );
    }

    #[test]
    fn thresholds_sit_at_their_share_of_strangers() {
        // At the cosine a threshold needs, the users' stranger rates add up to the share the
        // definition states.
        for (confidence, allowed) in [(0.45f32, 0.02f64), (0.67, 0.005), (0.8, 0.001)] {
            let share = allowed * MARGIN;
            for users in [1, 3, 30, 300] {
                for samples in [1, 3, 5, 40] {
                    let g = Enrolment::of(vec![samples; users]);
                    let cosine = recognition_cosine_for(confidence, &g) + 1e-4;
                    let at = 10f64.powf(log10_stranger_rate(cosine, samples) as f64) * users as f64;
                    assert!((at / share - 1.0).abs() < 0.02, "{confidence} {g:?}: {at}");
                }
            }
        }
    }

    #[test]
    fn enrolment_counts_users_by_their_samples() {
        assert_eq!(Enrolment::of([1, 1, 1]), Enrolment([3, 0, 0, 0, 0]));
        assert_eq!(Enrolment::of([0, 2, 5, 9]), Enrolment([0, 1, 0, 0, 2]));
        assert_eq!(Enrolment::of([0, 2, 5, 9]).users(), 3);
        assert_eq!(Enrolment::of([]), Enrolment::default());
    }
}
