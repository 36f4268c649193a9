//! Open-set identification, the question a camera asks: of the strangers (people not
//! enrolled), how many does a gallery name, and of the enrolled people, how many does it name
//! correctly, at DeepStack's thresholds, for galleries of 1 to 100 people with 1 to 5
//! samples each.
//!
//! Users are scored as the daemon scores them: by the cosine with their template, the
//! normalised mean of their samples.
//!
//! The set's people are split in two by the order of their folders: the even ones calibrate
//! ([`derive`]: the stranger tails of templates of 1 to 5 samples), the odd ones report
//! ([`report`]). Every stranger of a reported figure is a person the calibration never saw; a
//! gallery larger than the report half borrows enrolled people from the calibration half, and
//! only the report half's probes are counted.

use deepstackd::config::DEFAULT_MIN_FACE_QUALITY;
use deepstackd::gallery::EMBEDDING_DIM;
use deepstackd::vision::calibration::{recognition_confidence, Enrolment, SAMPLE_TAILS};

/// The thresholds reported: Home Assistant's, DeepStack's default, and a strict one.
pub const THRESHOLDS: [f32; 3] = [0.45, 0.67, 0.8];
/// The share of strangers named that the definition allows at each of [`THRESHOLDS`].
pub const TARGET_FPIR: [f64; 3] = [0.02, 0.005, 0.001];
/// Gallery sizes simulated (people), and samples per person.
const GALLERY_PEOPLE: [usize; 5] = [1, 3, 10, 30, 100];
const GALLERY_SAMPLES: [usize; 3] = [1, 3, 5];
/// Random galleries drawn per size, per half.
const DRAWS: usize = 40;

/// One labelled face: its person, its embeddings, whether registration would keep it.
pub struct LabelledFace {
    pub person: usize,
    pub colour: [f32; EMBEDDING_DIM],
    /// The same photo converted to grayscale, when a face was found on it.
    pub gray: Option<[f32; EMBEDDING_DIM]>,
    /// Quality at least MIN_FACE_QUALITY: registration stores it.
    pub enrollable: bool,
}

impl LabelledFace {
    pub fn new(person: usize, colour: &[f32], gray: Option<&[f32]>, quality: f32) -> Self {
        let arr = |v: &[f32]| {
            let mut a = [0f32; EMBEDDING_DIM];
            a.copy_from_slice(v);
            a
        };
        Self {
            person,
            colour: arr(colour),
            gray: gray.map(arr),
            enrollable: quality >= DEFAULT_MIN_FACE_QUALITY,
        }
    }
}

/// Which half a person is in: `true` for calibration.
pub fn calibrates(person: usize) -> bool {
    person.is_multiple_of(2)
}

fn dot(a: &[f32; EMBEDDING_DIM], b: &[f32; EMBEDDING_DIM]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// A user's template, as the daemon's index keeps it: the normalised mean of the samples.
pub fn template<'a>(
    samples: impl IntoIterator<Item = &'a [f32; EMBEDDING_DIM]>,
) -> [f32; EMBEDDING_DIM] {
    let mut sum = [0f32; EMBEDDING_DIM];
    for s in samples {
        for (a, b) in sum.iter_mut().zip(s) {
            *a += b;
        }
    }
    let norm = sum.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    sum.map(|x| x / norm)
}

/// Which probe embedding a run uses: the colour photo or its grayscale copy.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Probe {
    Colour,
    Gray,
}

impl Probe {
    fn of(self, f: &LabelledFace) -> Option<&[f32; EMBEDDING_DIM]> {
        match self {
            Probe::Colour => Some(&f.colour),
            Probe::Gray => f.gray.as_ref(),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Probe::Colour => "colour",
            Probe::Gray => "grayscale",
        }
    }
}

/// A small deterministic generator (SplitMix64): the same galleries on every run.
pub struct Rng(pub u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn shuffle<T>(&mut self, v: &mut [T]) {
        for i in (1..v.len()).rev() {
            v.swap(i, self.below(i + 1));
        }
    }
}

/// Faces grouped by person.
struct People<'a> {
    faces: Vec<Vec<&'a LabelledFace>>,
}

impl<'a> People<'a> {
    fn new(faces: &'a [LabelledFace]) -> Self {
        let n = faces.iter().map(|f| f.person + 1).max().unwrap_or(0);
        let mut by_person = vec![Vec::new(); n];
        for f in faces {
            by_person[f.person].push(f);
        }
        Self { faces: by_person }
    }

    /// People of one half with at least `enrollable` registrable faces and one more face.
    fn eligible(&self, calibration: bool, enrollable: usize) -> Vec<usize> {
        (0..self.faces.len())
            .filter(|&p| calibrates(p) == calibration)
            .filter(|&p| {
                let good = self.faces[p].iter().filter(|f| f.enrollable).count();
                good >= enrollable && self.faces[p].len() > enrollable
            })
            .collect()
    }

    /// `k` of `person`'s registrable faces, drawn at random: what registration would store.
    fn registered(&self, person: usize, k: usize, rng: &mut Rng) -> Vec<&'a LabelledFace> {
        let mut good: Vec<&LabelledFace> = self.faces[person]
            .iter()
            .copied()
            .filter(|f| f.enrollable)
            .collect();
        rng.shuffle(&mut good);
        good.truncate(k);
        good
    }

    /// All people of one half that have faces (strangers may be anyone).
    fn half(&self, calibration: bool) -> Vec<usize> {
        (0..self.faces.len())
            .filter(|&p| calibrates(p) == calibration && !self.faces[p].is_empty())
            .collect()
    }
}

/// One enrolled person of a drawn gallery: the person, its samples' template and count, the
/// held-out faces (its probes).
type Enrolled<'a> = (usize, [f32; EMBEDDING_DIM], usize, Vec<&'a LabelledFace>);

/// One drawn gallery.
struct Gallery<'a> {
    users: Vec<Enrolled<'a>>,
}

impl<'a> Gallery<'a> {
    fn draw(people: &People<'a>, enrolled: &[usize], samples: usize, rng: &mut Rng) -> Self {
        let users = enrolled
            .iter()
            .map(|&p| {
                let good = people.registered(p, samples, rng);
                let probes = people.faces[p]
                    .iter()
                    .copied()
                    .filter(|f| !good.iter().any(|g| std::ptr::eq(*g, *f)))
                    .collect();
                (
                    p,
                    template(good.iter().map(|f| &f.colour)),
                    good.len(),
                    probes,
                )
            })
            .collect();
        Self { users }
    }

    /// The enrolment the daemon's index computes for this gallery.
    fn enrolment(&self) -> Enrolment {
        Enrolment::of(self.users.iter().map(|u| u.2))
    }

    /// The best user for `probe` and its template cosine.
    fn best(&self, probe: &[f32; EMBEDDING_DIM]) -> (usize, f32) {
        let mut best = (usize::MAX, f32::NEG_INFINITY);
        for (person, template, _, _) in &self.users {
            let c = dot(probe, template);
            if c > best.1 {
                best = (*person, c);
            }
        }
        best
    }
}

/// Counts for one gallery size and probe kind.
#[derive(Default, Clone)]
pub struct Row {
    /// People enrolled, and samples each.
    pub people: usize,
    pub samples: usize,
    /// People of the report half among the enrolled (the rest borrowed).
    pub reported_enrolled: usize,
    /// Stranger probes, and how many were named at each of [`THRESHOLDS`].
    pub strangers: usize,
    pub stranger_named: [usize; 3],
    /// Probes of enrolled report-half people, and how many got their own name at each.
    pub enrolled: usize,
    pub enrolled_correct: [usize; 3],
}

impl Row {
    /// Share of the strangers named at threshold `i`.
    pub fn stranger_rate(&self, i: usize) -> f64 {
        self.stranger_named[i] as f64 / self.strangers.max(1) as f64
    }
    /// Share of the enrolled probes named correctly at threshold `i`.
    pub fn enrolled_rate(&self, i: usize) -> f64 {
        self.enrolled_correct[i] as f64 / self.enrolled.max(1) as f64
    }
}

/// Galleries of every size drawn from the report half (and the calibration half for those
/// larger than it), `probe` faces scored against them with the shipped calibration.
pub fn report(faces: &[LabelledFace], probe: Probe) -> Vec<Row> {
    let people = People::new(faces);
    let mut rows = Vec::new();
    for &samples in &GALLERY_SAMPLES {
        let own = people.eligible(false, samples);
        let borrowed = people.eligible(true, samples);
        let report_half = people.half(false);
        for &n in &GALLERY_PEOPLE {
            // At least a third of the report half (and one person) stays strangers.
            let keep_strangers = (report_half.len() / 3).max(1);
            let from_own = n
                .min(own.len())
                .min(report_half.len().saturating_sub(keep_strangers));
            if from_own + borrowed.len() < n || report_half.len() <= from_own {
                continue;
            }
            let mut row = Row {
                people: n,
                samples,
                reported_enrolled: from_own,
                ..Row::default()
            };
            let mut rng = Rng(0x5eed ^ (n as u64) << 8 ^ samples as u64);
            for _ in 0..DRAWS {
                let mut mine = own.clone();
                rng.shuffle(&mut mine);
                mine.truncate(from_own);
                let mut lent = borrowed.clone();
                rng.shuffle(&mut lent);
                lent.truncate(n - from_own);
                let enrolled: Vec<usize> = mine.iter().chain(&lent).copied().collect();
                let gallery = Gallery::draw(&people, &enrolled, samples, &mut rng);
                let enrolment = gallery.enrolment();
                let named = |cosine: f32| {
                    let c = recognition_confidence(cosine, &enrolment);
                    THRESHOLDS.map(|t| c >= t)
                };
                for &p in report_half.iter().filter(|p| !enrolled.contains(p)) {
                    for f in &people.faces[p] {
                        let Some(e) = probe.of(f) else { continue };
                        row.strangers += 1;
                        for (i, hit) in named(gallery.best(e).1).iter().enumerate() {
                            row.stranger_named[i] += *hit as usize;
                        }
                    }
                }
                for (person, _, _, probes) in gallery.users.iter().filter(|u| mine.contains(&u.0)) {
                    for f in probes {
                        let Some(e) = probe.of(f) else { continue };
                        row.enrolled += 1;
                        let (who, cosine) = gallery.best(e);
                        if who == *person {
                            for (i, hit) in named(cosine).iter().enumerate() {
                                row.enrolled_correct[i] += *hit as usize;
                            }
                        }
                    }
                }
            }
            rows.push(row);
        }
    }
    rows
}

/// Prints the table of [`report`].
pub fn print_report(rows: &[Row], probe: Probe) {
    println!();
    println!(
        "open-set, {} probes against colour samples (strangers: people calibration never saw; \
         {DRAWS} random galleries a size)",
        probe.name()
    );
    println!(
        "gallery (people x samples)  strangers named at 0.45 / 0.67 / 0.80   \
         enrolled named correctly at 0.45 / 0.67 / 0.80"
    );
    for r in rows {
        let borrowed = r.people - r.reported_enrolled;
        let note = if borrowed > 0 {
            format!(" ({borrowed} enrolled from the calibration half, not counted)")
        } else {
            String::new()
        };
        let enrolled = if r.enrolled == 0 {
            "-".to_owned()
        } else {
            (0..3)
                .map(|i| format!("{:.1}%", r.enrolled_rate(i) * 100.0))
                .collect::<Vec<_>>()
                .join(" / ")
        };
        println!(
            "{:>4} x {}                   {:<36} {}  [{} stranger, {} enrolled probes]{note}",
            r.people,
            r.samples,
            (0..3)
                .map(|i| format!("{:.2}%", r.stranger_rate(i) * 100.0))
                .collect::<Vec<_>>()
                .join(" / "),
            enrolled,
            r.strangers,
            r.enrolled
        );
    }
    let worst: Vec<f64> = (0..3)
        .map(|i| rows.iter().map(|r| r.stranger_rate(i)).fold(0.0, f64::max))
        .collect();
    println!(
        "worst strangers named: {} (allowed {})",
        (0..3)
            .map(|i| format!("{:.2}%", worst[i] * 100.0))
            .collect::<Vec<_>>()
            .join(" / "),
        TARGET_FPIR
            .iter()
            .map(|t| format!("{:.1}%", t * 100.0))
            .collect::<Vec<_>>()
            .join(" / ")
    );
}

/// log10 rates at which the stranger tail gets a knot, as far as the pairs measure them.
const TAIL_LOG_RATES: [f32; 11] = [
    -0.3, -0.5, -1.0, -1.5, -2.0, -2.5, -3.0, -3.5, -4.0, -4.5, -5.0,
];
/// A knot needs at least this many pairs above it.
const TAIL_MIN_EVENTS: usize = 30;
/// Knots the extrapolation slope is fitted on (the last ones measured).
const TAIL_FIT_KNOTS: usize = 4;
/// The share of the fitted slope the tail keeps past the data.
const EXTRAPOLATION_SLOPE: f32 = 0.75;

/// Random templates drawn per calibration user for 2 or more samples (one sample: every
/// registrable face is one).
const TEMPLATE_DRAWS: usize = 10;

/// One stranger tail: (cosine, log10 rate) knots extrapolated to cosine 1, and how many
/// (colour, grayscale) stranger scores they come from.
pub type Tail = (Vec<(f32, f32)>, [usize; 2]);

/// What [`derive`] measured: the constants for `calibration.rs` and the figures behind them.
pub struct Derived {
    /// One tail per sample count, 1..=SAMPLE_TAILS.
    pub tails: Vec<Tail>,
}

/// The cosine above which a fraction `10^log_rate` of the (descending) `scores` lie.
fn cosine_at_rate(desc: &[f32], log_rate: f32) -> Option<f32> {
    let k = (10f64.powf(log_rate as f64) * desc.len() as f64).round() as usize;
    (k >= TAIL_MIN_EVENTS && k < desc.len()).then(|| desc[k - 1])
}

/// The calibration half's templates of `k` registrable colour samples of one person: every
/// registrable face for one sample, [`TEMPLATE_DRAWS`] random draws a person for more.
fn calibration_templates(people: &People, k: usize) -> Vec<(usize, [f32; EMBEDDING_DIM])> {
    let mut rng = Rng(0xca11b ^ k as u64);
    let mut out = Vec::new();
    for u in people.eligible(true, k) {
        if k == 1 {
            for f in people.faces[u].iter().filter(|f| f.enrollable) {
                out.push((u, f.colour));
            }
        } else {
            for _ in 0..TEMPLATE_DRAWS {
                let good = people.registered(u, k, &mut rng);
                out.push((u, template(good.iter().map(|f| &f.colour))));
            }
        }
    }
    out
}

/// Every calibration-half face (colour, or its grayscale copy) against every template of
/// another person, best first.
fn stranger_scores(
    people: &People,
    templates: &[(usize, [f32; EMBEDDING_DIM])],
    probe: Probe,
) -> Vec<f32> {
    let mut out = Vec::new();
    for a in people.half(true) {
        for f in &people.faces[a] {
            let Some(e) = probe.of(f) else { continue };
            for (_, t) in templates.iter().filter(|(u, _)| *u != a) {
                out.push(dot(e, t));
            }
        }
    }
    out.sort_by(|a, b| b.total_cmp(a));
    out
}

/// Knots of one stranger tail: at each rate the heavier of the colour and grayscale probes'
/// (the map must hold for night frames too), extrapolated past the data.
fn tail_knots(colour: &[f32], gray: &[f32]) -> Vec<(f32, f32)> {
    let mut tail: Vec<(f32, f32)> = vec![(-1.0, 0.0)];
    for &l in &TAIL_LOG_RATES {
        let t = match (cosine_at_rate(colour, l), cosine_at_rate(gray, l)) {
            (Some(a), Some(b)) => a.max(b),
            (Some(a), None) | (None, Some(a)) => a,
            (None, None) => break,
        };
        if t > tail.last().expect("first knot").0 + 1e-4 {
            tail.push((t, l));
        }
    }
    // Past the data, log10 rate falls linearly with EXTRAPOLATION_SLOPE of the slope of the
    // last measured knots: a heavier tail than the Gaussian-like one the knots follow, for
    // the look-alikes a larger gallery meets (measured: the plain slope named 0.21% of the
    // strangers at 0.8 with 100 people enrolled).
    let fit = &tail[tail.len().saturating_sub(TAIL_FIT_KNOTS).max(1)..];
    let n = fit.len() as f32;
    let (mx, my) = (
        fit.iter().map(|k| k.0).sum::<f32>() / n,
        fit.iter().map(|k| k.1).sum::<f32>() / n,
    );
    let slope = fit.iter().map(|k| (k.0 - mx) * (k.1 - my)).sum::<f32>()
        / fit
            .iter()
            .map(|k| (k.0 - mx).powi(2))
            .sum::<f32>()
            .max(1e-9);
    let last = *tail.last().expect("knots");
    if last.0 < 1.0 && slope < 0.0 {
        tail.push((1.0, last.1 + EXTRAPOLATION_SLOPE * slope * (1.0 - last.0)));
    }
    tail
}

/// Derives the stranger tails of templates of 1 to [`SAMPLE_TAILS`] samples from the
/// calibration half.
pub fn derive(faces: &[LabelledFace]) -> Derived {
    let people = People::new(faces);
    let tails = (1..=SAMPLE_TAILS)
        .map(|k| {
            let templates = calibration_templates(&people, k);
            let colour = stranger_scores(&people, &templates, Probe::Colour);
            let gray = stranger_scores(&people, &templates, Probe::Gray);
            (tail_knots(&colour, &gray), [colour.len(), gray.len()])
        })
        .collect();
    Derived { tails }
}

/// A face whose median cosine to another person's faces reaches this, and beats its median to
/// its own person's other faces, is labelled as the wrong person: it is the other one.
const MISLABELLED_MEDIAN: f32 = 0.45;

/// Faces that are labelled as the wrong person (CelebA has a few: a photo filed under one
/// identity that shows another), with (the person they show, that median, the median to their
/// own label). Kept out of the open-set figures: they are genuine matches, not strangers.
pub fn mislabelled(faces: &[LabelledFace]) -> Vec<(usize, usize, f32, f32)> {
    let people = faces.iter().map(|f| f.person + 1).max().unwrap_or(0);
    let mut out = Vec::new();
    for (i, f) in faces.iter().enumerate() {
        let mut by_person: Vec<Vec<f32>> = vec![Vec::new(); people];
        for (j, g) in faces.iter().enumerate() {
            if i != j {
                by_person[g.person].push(dot(&f.colour, &g.colour));
            }
        }
        let medians: Vec<f32> = by_person
            .iter_mut()
            .map(|v| {
                v.sort_by(f32::total_cmp);
                v.get(v.len() / 2).copied().unwrap_or(f32::NEG_INFINITY)
            })
            .collect();
        let own = medians[f.person];
        let (other, best) = medians
            .iter()
            .enumerate()
            .filter(|&(p, _)| p != f.person)
            .fold((usize::MAX, f32::NEG_INFINITY), |b, (p, &m)| {
                if m > b.1 {
                    (p, m)
                } else {
                    b
                }
            });
        if best >= MISLABELLED_MEDIAN && best > own {
            out.push((i, other, best, own));
        }
    }
    out
}
