//! A run of `conv_kernels` layers computed row by row, so that the activations between
//! them never exist whole.
//!
//! Why: YuNet's large layers (16 to 64 channels at 320x240 and 160x120) do a few
//! multiply-adds per byte they move. Run one after the other, each writes an activation of
//! up to 4.9 MB that the next reads back: on the 2-core x86 machine of BENCHMARKS.md the
//! depthwise layers and max pools ran at memory speed, not at the speed of their
//! arithmetic. Here each layer's output is a ring of four rows of every channel; a row is
//! computed when the next layer asks for it, from the rows of the layer before (the same
//! row for a pointwise convolution, the row above and below too for a depthwise one, two
//! rows for a max pool). What one output row needs stays in the L1 and L2 caches, and only
//! the chain's input and output are whole tensors; the input need not be either, when a
//! [`RowSource`] makes its rows as the first layer asks for them (YuNet's letterbox). A
//! first 1x1 layer or max pool reads the input planes in place rather than copies of their
//! rows in a ring.
//!
//! The rows in the rings are padded to a multiple of the pointwise kernel's tile of pixels,
//! so that it runs on whole tiles; the padding is computed like pixels and never read as
//! one (the depthwise kernel takes its edge pixels with zero padding, the max pool reads
//! only the pixels it pools). Results equal the layers run one by one by direct loops up to
//! float rounding (the tests compare them).

use std::cell::Cell;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::conv_kernels::{
    add_upsampled_row, max_pool_2x2_row, Depthwise3x3, Pointwise, POINTWISE_PIXELS,
};

/// One layer of a [`Chain`].
#[derive(Debug, Clone, PartialEq)]
pub enum Stage {
    /// A 1x1 convolution.
    Pointwise(Pointwise),
    /// A 3x3 depthwise convolution, stride 1, padding 1.
    Depthwise(Depthwise3x3),
    /// A 2x2 max pool, stride 2 (odd edges dropped).
    MaxPool,
    /// A dense 3x3 convolution, stride 2, padding 1 (YuNet's first layer), as a pointwise
    /// convolution of the 9 x inputs taps of each output pixel (`Stem::new`).
    Stem(Stem),
}

/// A dense 3x3 convolution with stride 2 and padding 1: each output row's taps are laid
/// out as `9 x inputs` rows (im2col, from the input rows split into even and odd columns
/// once), then multiplied by the pointwise kernel.
#[derive(Debug, Clone, PartialEq)]
pub struct Stem {
    inputs: usize,
    taps: Pointwise,
}

impl Stem {
    /// `weights` as ONNX lays them out, `[outputs][inputs][3][3]`.
    pub fn new(weights: &[f32], bias: Vec<f32>, inputs: usize, relu: bool) -> Stem {
        Stem {
            inputs,
            taps: Pointwise::new(weights, bias, 9 * inputs, relu),
        }
    }

    /// Input channels.
    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// Output channels.
    pub fn outputs(&self) -> usize {
        self.taps.outputs()
    }

    /// Output row from input rows `2r - 1`, `2r`, `2r + 1` (zeros past the edges), each
    /// `inputs` rows of `pitch` floats with `w` pixels.
    fn run_row(
        &self,
        rows: [&[f32]; 3],
        (pitch, w): (usize, usize),
        output: &mut [f32],
        (out_pitch, ow): (usize, usize),
        scratch: &mut Scratch,
    ) {
        let cols = &mut scratch.cols;
        // Zeroed once: the columns past `ow` are never written.
        let need = 9 * self.inputs * out_pitch + 2 * (ow + 1);
        if cols.len() != need {
            cols.clear();
            cols.resize(need, 0.0);
        }
        let (cols, halves) = cols.split_at_mut(9 * self.inputs * out_pitch);
        let (even, odd) = halves.split_at_mut(ow + 1);
        for c in 0..self.inputs {
            for (ky, row) in rows.iter().enumerate() {
                // even[x] = in[2x], odd[x + 1] = in[2x + 1] (odd[0] is the left padding).
                let src = &row[c * pitch..][..w];
                let pairs = w / 2;
                for ((e, o), pair) in even.iter_mut().zip(&mut odd[1..]).zip(src.chunks_exact(2)) {
                    (*e, *o) = (pair[0], pair[1]);
                }
                odd[0] = 0.0;
                if w % 2 == 1 {
                    even[pairs] = src[w - 1];
                    odd[pairs + 1] = 0.0;
                }
                let at = (c * 9 + ky * 3) * out_pitch;
                cols[at..][..ow].copy_from_slice(&odd[..ow]);
                cols[at + out_pitch..][..ow].copy_from_slice(&even[..ow]);
                cols[at + 2 * out_pitch..][..ow].copy_from_slice(&odd[1..ow + 1]);
            }
        }
        self.taps
            .run_row(cols, output, out_pitch, &mut scratch.tile);
    }
}

thread_local! {
    /// How many more threads the chains run on this thread may use (see [`with_helpers`]).
    static HELPERS: Cell<usize> = const { Cell::new(0) };
}

/// Multiply-adds a band has at the least: every chain of YuNet at 640x480 but the two of
/// 20x15 (under 3 M each) is shared. With the helper woken for each chain, sharing any but
/// the backbone (about 160 M) did not pay on the 2-core VM of BENCHMARKS.md (6.0-6.5 ms a
/// detection at 640x480 with 8 or 16 M a band, 5.8-6.0 with 32 M, `profile`); kept awake
/// through the detection ([`KeepWarm`]), it takes a share of the tail chains too: 4.1-4.2
/// -> 3.6 ms (`profile`, two threads).
const MIN_BAND_WORK: usize = 4 << 20;
/// How long the thread that shared a chain polls for the other bands before it parks.
const SPIN_FOR_BANDS: Duration = Duration::from_millis(2);
/// Output rows a band has at the least.
const MIN_BAND_ROWS: usize = 8;

/// Runs `f` with `helpers` more threads allowed to share each chain it runs (the cores of
/// idle inference threads, lent to one request so that a lone detection uses every core;
/// the shares run on rayon's global pool).
///
/// For as long as `f` runs, `helpers` jobs on that pool wait for shares by polling rather
/// than parked (see [`KeepWarm`]).
pub fn with_helpers<T>(helpers: usize, f: impl FnOnce() -> T) -> T {
    struct Restore(usize);
    impl Drop for Restore {
        fn drop(&mut self) {
            HELPERS.set(self.0);
        }
    }
    let _restore = Restore(HELPERS.replace(helpers));
    let _warm = KeepWarm::start(helpers);
    f()
}

/// Jobs that keep `n` of rayon's threads awake, running whatever shares arrive, until
/// dropped (or [`KEEP_WARM_LIMIT`] has passed).
///
/// Why: a parked thread woken for a share starts it tens of microseconds to milliseconds
/// later on a virtual machine whose idle cores halt. Woken once per detection, the helper
/// stays awake through the chains between the shared ones.
struct KeepWarm(Arc<AtomicBool>);

/// The longest a [`KeepWarm`] job polls, should its owner never drop it.
const KEEP_WARM_LIMIT: Duration = Duration::from_millis(100);

impl KeepWarm {
    fn start(n: usize) -> Option<KeepWarm> {
        if n == 0 {
            return None;
        }
        let done = Arc::new(AtomicBool::new(false));
        for _ in 0..n {
            let done = Arc::clone(&done);
            // Runs the shares as they come; between them, yields the core.
            rayon::spawn(move || {
                let run_shares = || {
                    while rayon::yield_now() == Some(rayon::Yield::Executed) {}
                    done.load(Ordering::Acquire)
                };
                spin_until(run_shares, KEEP_WARM_LIMIT);
            });
        }
        Some(KeepWarm(done))
    }
}

impl Drop for KeepWarm {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

/// Polls until `done` or for `limit`, yielding the core between polls (not a busy spin: any
/// other thread that wants the core gets it). The thread that shared a chain waits for the
/// other bands this way rather than parked (rayon's scope then ends at once), and the
/// [`KeepWarm`] jobs for shares.
fn spin_until(done: impl Fn() -> bool, limit: Duration) {
    let until = Instant::now() + limit;
    while !done() {
        if Instant::now() > until {
            return;
        }
        std::thread::yield_now();
    }
}

/// Where a chain's input rows come from: the planes of a tensor (`Planes`), or rows made
/// when the chain asks for them (the detector's letterbox, which so never exists whole).
pub trait RowSource: Sync {
    /// What one band keeps from row to row (each band has its own).
    type Cache: Default;

    /// Writes input row `r` of every channel into `dst`: channel `c`'s `w` pixels (the
    /// chain's input width) at `dst[c * pitch..]`.
    fn write_row(&self, r: usize, cache: &mut Self::Cache, dst: &mut [f32], pitch: usize);

    /// Rows that are all the same (the letterbox's zeros below the photo). Of the rows of
    /// each activation computed only from such rows, away from the edges' zero padding, the
    /// chain computes one and copies it for the others: the same operations on the same
    /// values, so the same values.
    fn uniform_rows(&self) -> Range<usize> {
        0..0
    }

    /// The whole input as `c` planes of `h` x `w`, when it exists as such: a first 1x1
    /// layer or max pool then reads its rows in place instead of from copies.
    fn planes(&self) -> Option<&[f32]> {
        None
    }
}

/// A chain's input as `dims.c` planes of `dims.h` x `dims.w` floats.
struct Planes<'a> {
    data: &'a [f32],
    dims: Dims,
}

impl RowSource for Planes<'_> {
    type Cache = ();

    fn write_row(&self, r: usize, _: &mut (), dst: &mut [f32], pitch: usize) {
        let Dims { c, h, w } = self.dims;
        for ch in 0..c {
            dst[ch * pitch..][..w].copy_from_slice(&self.data[ch * h * w + r * w..][..w]);
        }
    }

    fn planes(&self) -> Option<&[f32]> {
        Some(self.data)
    }
}

/// A chain's input as the sum of `dims.c` planes of `dims.h` x `dims.w` and as many planes
/// of half the height and width upsampled 2x by nearest neighbour (YuNet's neck: an
/// activation plus the coarser one after it), summed row by row as the chain reads them,
/// instead of by an upsampled tensor and a sum of two.
pub struct UpsampledSum<'a> {
    /// `dims.c` planes of `dims.h` x `dims.w`.
    pub fine: &'a [f32],
    /// `dims.c` planes of `dims.h / 2` x `dims.w / 2`.
    pub coarse: &'a [f32],
    /// The fine planes', their height and width even.
    pub dims: Dims,
}

impl RowSource for UpsampledSum<'_> {
    type Cache = ();

    fn write_row(&self, r: usize, _: &mut (), dst: &mut [f32], pitch: usize) {
        let Dims { c, h, w } = self.dims;
        let (ch, cw) = (h / 2, w / 2);
        for k in 0..c {
            add_upsampled_row(
                &self.fine[k * h * w + r * w..][..w],
                &self.coarse[k * ch * cw + (r / 2) * cw..][..cw],
                &mut dst[k * pitch..][..w],
            );
        }
    }
}

/// What a band reads its input from.
struct Input<'a, S: RowSource> {
    source: &'a S,
    cache: S::Cache,
    /// The source's planes, when the first layer reads them in place ([`RowSource::planes`]):
    /// the first activation's ring is then not used.
    planes: Option<&'a [f32]>,
}

/// Rows a ring keeps: a depthwise row needs three, and its producer runs one ahead.
const RING: usize = 4;

/// Layers run one after the other on NCHW f32, row by row.
#[derive(Debug)]
pub struct Chain {
    stages: Vec<Stage>,
    /// Ring buffers of earlier runs, for the next: allocating and zeroing them on every run
    /// (about 1.5 MB for YuNet's backbone) cost more than the second thread saved under the
    /// daemon's one-arena malloc. What they hold is never read before it is written, but
    /// for the padding past a row's pixels, which is only read into padding.
    spare: Mutex<Vec<Vec<f32>>>,
}

impl Clone for Chain {
    fn clone(&self) -> Chain {
        Chain::new(self.stages.clone())
    }
}

impl PartialEq for Chain {
    fn eq(&self, other: &Chain) -> bool {
        self.stages == other.stages
    }
}

/// Channels, height and width of the activation between two stages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dims {
    /// Channels.
    pub c: usize,
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
}

impl Dims {
    fn pitch(&self) -> usize {
        self.w.div_ceil(POINTWISE_PIXELS).max(1) * POINTWISE_PIXELS
    }
}

/// Buffers a band reuses from row to row.
#[derive(Default)]
struct Scratch {
    /// The stem's taps of one output row.
    cols: Vec<f32>,
    /// The pointwise kernel's tile.
    tile: Vec<f32>,
}

/// The rows of one activation that are in flight.
struct Ring {
    dims: Dims,
    pitch: usize,
    /// `RING` slots of `c` rows of `pitch` floats.
    data: Vec<f32>,
    /// Rows computed so far (row `r` is in slot `r % RING` while it is needed).
    produced: usize,
    /// The rows computed from uniform input rows only ([`RowSource::uniform_rows`]), all
    /// equal, and the first of them once computed (empty before).
    uniform: Range<usize>,
    saved: Vec<f32>,
}

impl Ring {
    /// A ring for `dims` in `data` (resized: zeros where it grows).
    fn new(dims: Dims, mut data: Vec<f32>) -> Ring {
        let pitch = dims.pitch();
        data.resize(RING * dims.c * pitch, 0.0);
        Ring {
            dims,
            pitch,
            data,
            produced: 0,
            uniform: 0..0,
            saved: Vec::new(),
        }
    }

    fn slot_len(&self) -> usize {
        self.dims.c * self.pitch
    }

    fn row(&self, r: usize) -> &[f32] {
        let len = self.slot_len();
        &self.data[(r % RING) * len..][..len]
    }

    fn row_mut(&mut self, r: usize) -> &mut [f32] {
        let len = self.slot_len();
        &mut self.data[(r % RING) * len..][..len]
    }

    /// Row `r` as a copy of the uniform row when it is one and that was computed.
    fn copy_uniform(&mut self, r: usize) -> bool {
        if !self.uniform.contains(&r) || self.saved.is_empty() {
            return false;
        }
        let len = self.slot_len();
        self.data[(r % RING) * len..][..len].copy_from_slice(&self.saved);
        true
    }

    /// Keeps row `r` when it is the first uniform row computed.
    fn keep_uniform(&mut self, r: usize) {
        if self.uniform.contains(&r) && self.saved.is_empty() {
            self.saved = self.row(r).to_vec();
        }
    }
}

impl Chain {
    /// A chain of `stages`, first to last.
    pub fn new(stages: Vec<Stage>) -> Chain {
        Chain {
            stages,
            spare: Mutex::default(),
        }
    }

    /// The layers.
    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// The activations: the input, then each stage's output; `None` where a stage does not
    /// take the channels it is given.
    pub fn dims(&self, input: Dims) -> Option<Vec<Dims>> {
        let mut all = vec![input];
        let mut d = input;
        for stage in &self.stages {
            d = match stage {
                Stage::Pointwise(p) if p.inputs() == d.c => Dims {
                    c: p.outputs(),
                    ..d
                },
                Stage::Depthwise(k) if k.channels() == d.c => d,
                Stage::MaxPool => Dims {
                    c: d.c,
                    h: d.h / 2,
                    w: d.w / 2,
                },
                Stage::Stem(k) if k.inputs() == d.c => Dims {
                    c: k.outputs(),
                    h: d.h.div_ceil(2),
                    w: d.w.div_ceil(2),
                },
                _ => return None,
            };
            all.push(d);
        }
        Some(all)
    }

    /// `input`: `dims.c` planes of `dims.h` x `dims.w`; `output`: the last stage's planes.
    ///
    /// With helper threads allowed on this thread ([`with_helpers`]) and enough work, the
    /// output rows are shared among them in bands, each computed from the rows it needs
    /// (the few rows around a band's edge are computed by both bands next to it). This
    /// thread computes the first band; the others go to rayon's pool.
    ///
    /// # Panics
    /// When the stages do not fit `dims` or a buffer is not of its size.
    pub fn run(&self, input: &[f32], output: &mut [f32], dims: Dims) {
        assert_eq!(input.len(), dims.c * dims.h * dims.w, "chain input size");
        self.run_rows(&Planes { data: input, dims }, output, dims);
    }

    /// [`Chain::run`] on input rows of `dims` made by `source` as the chain needs them.
    ///
    /// # Panics
    /// As [`Chain::run`].
    pub fn run_rows<S: RowSource>(&self, source: &S, output: &mut [f32], dims: Dims) {
        let all = self.dims(dims).expect("the chain's channels fit its input");
        let last = *all.last().expect("the input's dims");
        assert_eq!(output.len(), last.c * last.h * last.w, "chain output size");
        if all.iter().any(|d| d.h == 0 || d.w == 0) {
            return;
        }
        let work: usize = self
            .stages
            .iter()
            .zip(&all[1..])
            .map(|(stage, out)| {
                let per_pixel = match stage {
                    Stage::Pointwise(p) => p.inputs() * p.outputs(),
                    Stage::Depthwise(k) => 9 * k.channels(),
                    Stage::MaxPool => out.c,
                    Stage::Stem(k) => 9 * k.inputs() * k.outputs(),
                };
                per_pixel * out.h * out.w
            })
            .sum();
        let bands = (HELPERS.get() + 1)
            .min(work / MIN_BAND_WORK)
            .min(last.h / MIN_BAND_ROWS)
            .max(1);
        let band_rows = |i: usize| last.h * i / bands..last.h * (i + 1) / bands;
        // Each band writes its rows of every output plane in place, rather than into a
        // buffer of its own copied in after (1.2 MB zeroed, filled and copied for YuNet's
        // backbone at 640x480, the copy on this thread while the others waited).
        let mut bands_out: Vec<Vec<&mut [f32]>> =
            (0..bands).map(|_| Vec::with_capacity(last.c)).collect();
        for plane in output.chunks_exact_mut(last.h * last.w) {
            let mut rest = plane;
            for (i, band) in bands_out.iter_mut().enumerate() {
                let (rows, after) = rest.split_at_mut(band_rows(i).len() * last.w);
                band.push(rows);
                rest = after;
            }
        }
        let mut bands_out = bands_out.into_iter();
        let first = bands_out.next().expect("one band at least");
        if bands == 1 {
            return self.run_band(source, &all, band_rows(0), first);
        }
        let pending = AtomicUsize::new(bands - 1);
        rayon::in_place_scope(|scope| {
            for (i, out) in bands_out.enumerate() {
                let (all, pending) = (&all, &pending);
                scope.spawn(move |_| {
                    self.run_band(source, all, band_rows(i + 1), out);
                    pending.fetch_sub(1, Ordering::Release);
                });
            }
            self.run_band(source, &all, band_rows(0), first);
            spin_until(|| pending.load(Ordering::Acquire) == 0, SPIN_FOR_BANDS);
        });
    }

    /// Output rows `rows` of the chain into `output`: per channel, its `rows.len()` rows.
    fn run_band<S: RowSource>(
        &self,
        source: &S,
        all: &[Dims],
        rows: Range<usize>,
        mut output: Vec<&mut [f32]>,
    ) {
        let last = *all.last().expect("the input's dims");
        let mut spare = {
            let mut pool = self.spare.lock().unwrap_or_else(PoisonError::into_inner);
            let keep = pool.len().saturating_sub(all.len());
            pool.split_off(keep)
        };
        let mut rings: Vec<Ring> = all
            .iter()
            .map(|&d| Ring::new(d, spare.pop().unwrap_or_default()))
            .collect();
        // The first row of each activation that the band needs.
        let mut first = rows.start;
        for (at, stage) in self.stages.iter().enumerate().rev() {
            rings[at + 1].produced = first;
            first = match stage {
                Stage::Pointwise(_) => first,
                Stage::Depthwise(_) => first.saturating_sub(1),
                Stage::MaxPool => 2 * first,
                Stage::Stem(_) => (2 * first).saturating_sub(1),
            };
        }
        rings[0].produced = first;
        // The uniform rows of each activation: those whose inputs all are, none past an edge.
        let uniform = source.uniform_rows();
        rings[0].uniform = uniform.start..uniform.end.min(all[0].h);
        for (at, stage) in self.stages.iter().enumerate() {
            let Range { start: p, end: q } = rings[at].uniform.clone();
            let uniform = match stage {
                Stage::Pointwise(_) => p..q,
                Stage::Depthwise(_) => p + 1..q.saturating_sub(1),
                Stage::MaxPool => p.div_ceil(2)..q / 2,
                Stage::Stem(_) => (p + 1).div_ceil(2)..q / 2,
            };
            rings[at + 1].uniform = uniform.start..uniform.end.min(all[at + 1].h);
        }
        let zeros = vec![0f32; all.iter().map(|d| d.c * d.pitch()).max().unwrap_or(0)];
        let mut scratch = Scratch::default();
        let first_in_place = match &self.stages[0] {
            Stage::MaxPool => true,
            // Its runs of pixels are whole tiles of its rows: in a plane, up to the row's end.
            Stage::Pointwise(_) => all[0].pitch() == all[0].w,
            Stage::Depthwise(_) | Stage::Stem(_) => false,
        };
        let mut input = Input {
            source,
            cache: S::Cache::default(),
            planes: source.planes().filter(|_| first_in_place),
        };
        let at = all.len() - 1;
        for (i, r) in rows.enumerate() {
            self.produce(&mut rings, at, r, &mut input, &zeros, &mut scratch);
            // Into the output planes. (The last depthwise layer writing them itself measured
            // no faster: its stores to 64 planes cost what the copy did.)
            let row = rings[at].row(r);
            let pitch = last.pitch();
            for (c, plane) in output.iter_mut().enumerate() {
                plane[i * last.w..][..last.w].copy_from_slice(&row[c * pitch..][..last.w]);
            }
        }
        // Back in the reverse order, so that the next run gives each ring the same buffer.
        let mut pool = self.spare.lock().unwrap_or_else(PoisonError::into_inner);
        pool.extend(rings.into_iter().rev().map(|ring| ring.data));
    }

    /// Computes the rows of activation `at` up to `row`, and what they need first.
    fn produce<S: RowSource>(
        &self,
        rings: &mut [Ring],
        at: usize,
        row: usize,
        input: &mut Input<S>,
        zeros: &[f32],
        scratch: &mut Scratch,
    ) {
        while rings[at].produced <= row {
            let r = rings[at].produced;
            if rings[at].copy_uniform(r) {
                // Its inputs were not computed: the rows after catch up with copies.
            } else if at == 0 {
                let pitch = rings[0].pitch;
                let dst = rings[0].row_mut(r);
                input.source.write_row(r, &mut input.cache, dst, pitch);
            } else {
                self.compute(rings, at, r, input, zeros, scratch);
            }
            rings[at].keep_uniform(r);
            rings[at].produced += 1;
        }
    }

    /// Computes row `r` of activation `at` (not the input) into its ring, from the rows it
    /// needs, which are computed first.
    fn compute<S: RowSource>(
        &self,
        rings: &mut [Ring],
        at: usize,
        r: usize,
        input: &mut Input<S>,
        zeros: &[f32],
        scratch: &mut Scratch,
    ) {
        let source_h = rings[at - 1].dims.h;
        let (stage, planes) = (&self.stages[at - 1], input.planes.filter(|_| at == 1));
        if let Some(planes) = planes {
            // The input read in place (`Input::planes`): a 1x1 layer or a max pool.
            let Dims { h, w, .. } = rings[0].dims;
            let dst = &mut rings[1];
            let (pitch, ow) = (dst.pitch, dst.dims.w);
            let out = dst.row_mut(r);
            match stage {
                Stage::Pointwise(p) => {
                    p.run_row_from(&planes[r * w..], h * w, out, pitch, &mut scratch.tile)
                }
                Stage::MaxPool => {
                    let (top, bottom) = (&planes[2 * r * w..], &planes[(2 * r + 1) * w..]);
                    max_pool_2x2_row(top, bottom, out, h * w, pitch, ow)
                }
                Stage::Depthwise(_) | Stage::Stem(_) => unreachable!("read from a ring"),
            }
            return;
        }
        let needed = match stage {
            Stage::Pointwise(_) => r,
            Stage::Depthwise(_) => (r + 1).min(source_h - 1),
            Stage::MaxPool => 2 * r + 1,
            Stage::Stem(_) => (2 * r + 1).min(source_h - 1),
        };
        self.produce(rings, at - 1, needed, input, zeros, scratch);
        let (before, after) = rings.split_at_mut(at);
        let (src, dst) = (&before[at - 1], &mut after[0]);
        let (pitch, out_pitch, w) = (src.pitch, dst.pitch, dst.dims.w);
        let len = src.slot_len();
        // Row `i` of the source, zeros outside it.
        let source = |i: Option<usize>| match i.filter(|&i| i < source_h) {
            Some(i) => src.row(i),
            None => &zeros[..len],
        };
        let out = dst.row_mut(r);
        match stage {
            Stage::Pointwise(p) => p.run_row(src.row(r), out, pitch, &mut scratch.tile),
            Stage::Depthwise(k) => k.run_row(
                [source(r.checked_sub(1)), src.row(r), source(Some(r + 1))],
                out,
                pitch,
                w,
            ),
            Stage::Stem(k) => k.run_row(
                [
                    source((2 * r).checked_sub(1)),
                    src.row(2 * r),
                    source(Some(2 * r + 1)),
                ],
                (pitch, src.dims.w),
                out,
                (out_pitch, w),
                scratch,
            ),
            Stage::MaxPool => {
                max_pool_2x2_row(src.row(2 * r), src.row(2 * r + 1), out, pitch, out_pitch, w)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vision::conv_kernels::tests::{
        depthwise_reference, max_pool_reference, pointwise_reference, values,
    };

    fn pointwise(inputs: usize, outputs: usize, relu: bool, seed: u32) -> Pointwise {
        Pointwise::new(
            &values(inputs * outputs, seed),
            values(outputs, seed + 1),
            inputs,
            relu,
        )
    }

    fn depthwise(c: usize, relu: bool, seed: u32) -> Depthwise3x3 {
        Depthwise3x3 {
            taps: (0..c)
                .map(|i| values(9, seed + i as u32).try_into().unwrap())
                .collect(),
            bias: values(c, seed + 100),
            relu,
        }
    }

    /// The same stages run one by one over whole planes, by direct loops.
    fn layer_by_layer(stages: &[Stage], input: &[f32], dims: Dims) -> Vec<f32> {
        let mut x = input.to_vec();
        let mut d = dims;
        for stage in stages {
            x = match stage {
                Stage::Pointwise(p) => {
                    d.c = p.outputs();
                    pointwise_reference(p, &x, d.h * d.w)
                }
                Stage::Depthwise(k) => depthwise_reference(k, &x, d.h, d.w),
                Stage::MaxPool => {
                    let y = max_pool_reference(&x, d.c, d.h, d.w);
                    d.h /= 2;
                    d.w /= 2;
                    y
                }
                Stage::Stem(_) => unreachable!("the stem is checked by its own test"),
            };
        }
        x
    }

    /// `first` (8 channels out), then YuNet's shape of chain: depthwise with ReLU, pools,
    /// pointwise to 13 channels.
    fn pooled_stages(mut first: Vec<Stage>) -> Vec<Stage> {
        first.extend([
            Stage::Depthwise(depthwise(8, true, 20)),
            Stage::MaxPool,
            Stage::Pointwise(pointwise(8, 13, true, 40)),
            Stage::Depthwise(depthwise(13, false, 60)),
            Stage::Depthwise(depthwise(13, true, 80)),
            Stage::MaxPool,
        ]);
        first
    }

    #[test]
    fn a_chain_equals_its_layers_run_one_by_one() {
        // A first 1x1 layer or max pool reads the input planes in place (a 1x1 layer only
        // where the rows are whole tiles, 64 and 32 pixels here).
        let first_pointwise = || Stage::Pointwise(pointwise(3, 8, false, 1));
        let last_depthwise = || Stage::Depthwise(depthwise(8, true, 2));
        for stages in [
            pooled_stages(vec![first_pointwise()]),
            vec![first_pointwise(), last_depthwise()],
            vec![Stage::MaxPool, first_pointwise(), last_depthwise()],
        ] {
            let chain = Chain::new(stages.clone());
            // On odd sizes, rows shorter and longer than a tile, and a pool of an odd height.
            for (h, w) in [(23, 37), (8, 64), (4, 4), (7, 2), (2, 19), (5, 32)] {
                let dims = Dims { c: 3, h, w };
                let input = values(3 * h * w, h as u32 * 100 + w as u32);
                let last = *chain.dims(dims).unwrap().last().unwrap();
                let mut out = vec![f32::NAN; last.c * last.h * last.w];
                chain.run(&input, &mut out, dims);
                let expected = layer_by_layer(&stages, &input, dims);
                assert_eq!(out.len(), expected.len());
                for (i, (a, b)) in out.iter().zip(&expected).enumerate() {
                    assert!(
                        (a - b).abs() <= 1e-5 * (1.0 + b.abs()),
                        "{} stages, {h}x{w} at {i}: {a} vs {b}",
                        stages.len()
                    );
                }
            }
        }
    }

    #[test]
    fn the_stem_is_a_strided_convolution_with_zero_padding() {
        let (cin, cout) = (3, 7);
        let weights = values(cout * cin * 9, 9);
        let bias = values(cout, 10);
        let chain = Chain::new(vec![Stage::Stem(Stem::new(
            &weights,
            bias.clone(),
            cin,
            true,
        ))]);
        for (h, w) in [(9, 37), (8, 64), (1, 1), (2, 3), (5, 2)] {
            let dims = Dims { c: cin, h, w };
            let input = values(cin * h * w, (h * 100 + w) as u32);
            let (oh, ow) = (h.div_ceil(2), w.div_ceil(2));
            let mut out = vec![f32::NAN; cout * oh * ow];
            chain.run(&input, &mut out, dims);
            for o in 0..cout {
                for r in 0..oh {
                    for x in 0..ow {
                        let mut acc = bias[o];
                        for c in 0..cin {
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let (yy, xx) =
                                        ((2 * r + ky) as isize - 1, (2 * x + kx) as isize - 1);
                                    if yy >= 0 && xx >= 0 && (yy as usize) < h && (xx as usize) < w
                                    {
                                        acc += weights[((o * cin + c) * 3 + ky) * 3 + kx]
                                            * input[(c * h + yy as usize) * w + xx as usize];
                                    }
                                }
                            }
                        }
                        let got = out[(o * oh + r) * ow + x];
                        let want = acc.max(0.0);
                        assert!(
                            (got - want).abs() <= 1e-5 * (1.0 + want.abs()),
                            "{h}x{w} {o},{r},{x}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    /// A chain of about 117 M multiply-adds on 3 x 601x500: enough for three bands.
    fn banded_stages() -> Vec<Stage> {
        vec![
            Stage::Stem(Stem::new(&values(16 * 3 * 9, 1), values(16, 2), 3, true)),
            Stage::Pointwise(pointwise(16, 32, false, 3)),
            Stage::Depthwise(depthwise(32, true, 4)),
            Stage::MaxPool,
            Stage::Pointwise(pointwise(32, 32, false, 5)),
            Stage::Depthwise(depthwise(32, true, 6)),
        ]
    }

    #[test]
    fn bands_on_helper_threads_give_the_same_output() {
        // Also with the input planes read in place by a first 1x1 layer or max pool (each
        // about 160 M multiply-adds on 3 x 600x512).
        let mut in_place = banded_stages();
        in_place[0] = Stage::Pointwise(pointwise(3, 16, true, 1));
        let mut pooled = in_place.clone();
        pooled.insert(0, Stage::MaxPool);
        for (stages, (h, w)) in [
            (banded_stages(), (601, 500)),
            (in_place, (600, 512)),
            (pooled, (600, 1024)),
        ] {
            let chain = Chain::new(stages);
            let dims = Dims { c: 3, h, w };
            let input = values(3 * dims.h * dims.w, 7);
            let last = *chain.dims(dims).unwrap().last().unwrap();
            let mut alone = vec![f32::NAN; last.c * last.h * last.w];
            chain.run(&input, &mut alone, dims);
            for helpers in [1, 2] {
                let mut shared = vec![f32::NAN; alone.len()];
                with_helpers(helpers, || chain.run(&input, &mut shared, dims));
                assert_eq!(shared, alone, "{h}x{w}, {helpers} helpers");
            }
        }
        assert_eq!(HELPERS.get(), 0, "with_helpers restores the count");
    }

    /// Planes whose rows from `uniform.start` on are copies of that row, said to be uniform,
    /// counting the rows the chain asks for.
    struct Repeated<'a> {
        planes: Planes<'a>,
        uniform: Range<usize>,
        written: std::sync::atomic::AtomicUsize,
    }

    impl RowSource for Repeated<'_> {
        type Cache = ();

        fn write_row(&self, r: usize, _: &mut (), dst: &mut [f32], pitch: usize) {
            self.written
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            self.planes.write_row(r, &mut (), dst, pitch)
        }

        fn uniform_rows(&self) -> Range<usize> {
            self.uniform.clone()
        }
    }

    #[test]
    fn uniform_rows_are_copied_with_the_values_they_would_have() {
        let small = pooled_stages(vec![
            Stage::Stem(Stem::new(&values(8 * 3 * 9, 1), values(8, 2), 3, true)),
            Stage::Pointwise(pointwise(8, 8, false, 1)),
        ]);
        let large = banded_stages();
        for (stages, (h, w), from) in [
            (&small, (47, 37), vec![0, 1, 20, 30, 40, 46, 47]),
            (&small, (64, 40), vec![13, 50, 64]),
            (&large, (601, 500), vec![427, 555]),
        ] {
            let chain = Chain::new(stages.clone());
            let dims = Dims { c: 3, h, w };
            let last = *chain.dims(dims).unwrap().last().unwrap();
            for start in from {
                // Every row from `first` on is a copy of that row.
                let first = start.min(h - 1);
                let mut input = values(3 * h * w, (h + w + start) as u32);
                for plane in input.chunks_exact_mut(h * w) {
                    for r in first + 1..h {
                        plane.copy_within(first * w..(first + 1) * w, r * w);
                    }
                }
                let mut expected = vec![f32::NAN; last.c * last.h * last.w];
                chain.run(&input, &mut expected, dims);
                for helpers in [0, 1, 2] {
                    let run = |uniform: Range<usize>| {
                        let source = Repeated {
                            planes: Planes { data: &input, dims },
                            uniform,
                            written: Default::default(),
                        };
                        let mut got = vec![f32::NAN; expected.len()];
                        with_helpers(helpers, || chain.run_rows(&source, &mut got, dims));
                        (got, source.written.into_inner())
                    };
                    let (got, written) = run(first..usize::MAX);
                    let (_, all_written) = run(0..0);
                    let case = format!("{h}x{w} uniform from {first}, {helpers} helpers");
                    assert_eq!(got, expected, "{case}");
                    // The rows after the first uniform one are copies, not asked of the source
                    // (bands ask for the rows around their edges too).
                    if helpers == 0 {
                        assert_eq!(written, first + 1, "{case}");
                    } else if first + 2 < h {
                        assert!(written < all_written, "{case}: {written} of {all_written}");
                    }
                }
            }
        }
    }

    #[test]
    fn an_upsampled_sum_as_input_equals_the_sum_made_first() {
        let stages = vec![
            Stage::Pointwise(pointwise(3, 8, false, 1)),
            Stage::Depthwise(depthwise(8, true, 2)),
        ];
        let chain = Chain::new(stages);
        for (h, w) in [(8, 64), (30, 40), (2, 2)] {
            let dims = Dims { c: 3, h, w };
            let fine = values(3 * h * w, 3);
            let coarse = values(3 * (h / 2) * (w / 2), 4);
            let mut summed = fine.clone();
            for (i, v) in summed.iter_mut().enumerate() {
                let (k, y, x) = (i / (h * w), i / w % h, i % w);
                *v += coarse[(k * (h / 2) + y / 2) * (w / 2) + x / 2];
            }
            let last = *chain.dims(dims).unwrap().last().unwrap();
            let mut expected = vec![f32::NAN; last.c * last.h * last.w];
            chain.run(&summed, &mut expected, dims);
            let mut got = vec![f32::NAN; expected.len()];
            let source = UpsampledSum {
                fine: &fine,
                coarse: &coarse,
                dims,
            };
            chain.run_rows(&source, &mut got, dims);
            assert_eq!(got, expected, "{h}x{w}");
        }
    }

    #[test]
    fn channels_that_do_not_fit_are_refused() {
        let chain = Chain::new(vec![
            Stage::Pointwise(pointwise(4, 8, false, 1)),
            Stage::Depthwise(depthwise(6, false, 2)),
        ]);
        assert_eq!(chain.dims(Dims { c: 4, h: 2, w: 2 }), None);
        assert_eq!(chain.dims(Dims { c: 3, h: 2, w: 2 }), None);
    }
}
