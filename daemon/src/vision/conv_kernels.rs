//! Our own kernels for the three layer kinds that make up YuNet, a row of every channel at a
//! time (`conv_chain` runs them): the 3x3 depthwise convolution (stride 1, padding 1) with an
//! optional ReLU, the 1x1 (pointwise) convolution and the 2x2 max pool (stride 2), and the
//! rows of its neck's sums (an activation plus a coarser one upsampled 2x); and, on NCHW
//! planes, SFace's depthwise convolution (stride 1 or 2) with its PReLUs. `conv_ops` runs
//! them as tract ops.
//!
//! Why: tract 0.23.9 runs these layers at a quarter of onnxruntime's pace on the same fp32
//! weights (shared/models.md: its depthwise kernel falls back to scalar code, every 1x1
//! convolution first packs its activations, and its max pool walks a generic patch). In
//! NCHW with batch 1, a pointwise convolution is a matrix product whose activation rows are
//! already contiguous, so it needs no packing: each step broadcasts one weight per output
//! channel and multiplies a run of pixels of one input channel. The depthwise convolution is
//! nine shifted multiply-adds over three input rows.
//!
//! Every kernel is written once as plain Rust that the compiler vectorises, and compiled
//! several times: with AVX-512 or AVX2+FMA when the x86 CPU has them (chosen at run time),
//! and for the build's baseline otherwise (NEON with fused multiply-add on aarch64). Two
//! exceptions, in intrinsics: the stride-1 depthwise row on AVX-512, which shifts vectors
//! across lanes where the portable code loads shifted runs again (the compiler does not
//! find that on its own), and the pointwise tile on aarch64, whose accumulators the
//! compiler kept in memory there. Results equal a straightforward loop up to float
//! rounding (the tests compare them, the AVX-512 version and the portable one).

use std::sync::{Arc, OnceLock};

use tract_onnx::prelude::{tvec, TValue, TVec, Tensor, TractResult, TypedRunnableModel};

/// Multiply-add, fused where the target has it.
trait MulAdd {
    /// Whether the target has 32 vector registers of 512 bits (AVX-512), room for wider
    /// register tiles.
    const WIDE: bool = false;
    fn mul_add(a: f32, b: f32, c: f32) -> f32;
}

/// `a * b + c` in one rounding: for code compiled with FMA (x86 with `fma`, aarch64).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
struct Fused;
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
impl MulAdd for Fused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

/// [`Fused`] on AVX-512.
#[allow(dead_code)] // x86-64 only
struct Fused512;
impl MulAdd for Fused512 {
    const WIDE: bool = true;
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

/// `a * b + c` in two roundings: where FMA is not known to exist (it would be a libm call).
#[allow(dead_code)] // unused on aarch64, whose baseline has FMA
struct Separate;
impl MulAdd for Separate {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

#[inline(always)]
fn relu(v: f32) -> f32 {
    if v > 0.0 {
        v
    } else {
        0.0
    }
}

/// The instruction set the kernels run with on this CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// x86-64 with AVX-512F (and FMA).
    Avx512,
    /// x86-64 with AVX2 and FMA.
    Avx2Fma,
    /// The build's baseline (SSE2 on x86-64; NEON with FMA on aarch64; VFP on armv7).
    Baseline,
}

impl Isa {
    /// Detected once per process.
    pub fn detect() -> Isa {
        static ISA: OnceLock<Isa> = OnceLock::new();
        *ISA.get_or_init(|| {
            #[cfg(target_arch = "x86_64")]
            {
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    return Isa::Avx512;
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    return Isa::Avx2Fma;
                }
            }
            Isa::Baseline
        })
    }

    /// Its name, for the logs and the bench.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2Fma => "avx2+fma",
            Isa::Baseline if cfg!(target_arch = "aarch64") => "neon",
            Isa::Baseline => "baseline",
        }
    }
}

/// Runs a tract plan, then clears the upper halves of this thread's vector registers (see
/// [`clear_upper_vector_state`]): how the daemon's detector and recognizer run theirs.
pub fn run_plan(plan: &Arc<TypedRunnableModel>, input: Tensor) -> TractResult<TVec<TValue>> {
    let outputs = plan.run(tvec!(input.into()));
    clear_upper_vector_state();
    outputs
}

/// Clears the upper halves of this thread's vector registers (`vzeroupper`, on x86-64 with
/// AVX), to be called after a tract plan has run ([`run_plan`] does).
///
/// Some of tract 0.23.9's x86 kernels return with them dirty (YuNet's sigmoid heads, for
/// one). Until the next `vzeroupper`, every SSE instruction of the thread, which is what
/// the code compiled for baseline x86-64 is made of (the alignment, the letterbox,
/// decoding the heads, the next photo's JPEG decode), then runs slower: on the AMD EPYC
/// VM of BENCHMARKS.md, after a detection whose last vector code was tract's sigmoid, a
/// loop of scalar adds 0.85 -> 1.27 ms, an alignment 0.40 -> 0.96 ms, the next detection
/// 9.8 -> 14 ms. Code compiled for AVX ends with `vzeroupper` itself.
pub fn clear_upper_vector_state() {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU has AVX.
        unsafe { zero_upper() }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
fn zero_upper() {
    std::arch::x86_64::_mm256_zeroupper();
}

/// Defines `$name(args)` that runs `$body::<M>(args)` compiled for the detected [`Isa`].
macro_rules! dispatch {
    ($(#[$doc:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),*) => $body:ident) => {
        $(#[$doc])*
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn avx512($($arg: $ty),*) {
                    $body::<Fused512>($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn avx2($($arg: $ty),*) {
                    $body::<Fused>($($arg),*)
                }
                match Isa::detect() {
                    // SAFETY: Isa::detect found these features on this CPU.
                    Isa::Avx512 => return unsafe { avx512($($arg),*) },
                    Isa::Avx2Fma => return unsafe { avx2($($arg),*) },
                    Isa::Baseline => return $body::<Separate>($($arg),*),
                }
            }
            #[cfg(target_arch = "aarch64")]
            return $body::<Fused>($($arg),*);
            #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
            return $body::<Separate>($($arg),*);
        }
    };
}

/// A 3x3 depthwise convolution, stride 1, zero padding 1, with bias and optional ReLU.
#[derive(Debug, Clone, PartialEq)]
pub struct Depthwise3x3 {
    /// Per channel, the 3x3 taps row-major.
    pub taps: Vec<[f32; 9]>,
    /// Per channel.
    pub bias: Vec<f32>,
    /// ReLU applied to the output.
    pub relu: bool,
}

impl Depthwise3x3 {
    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.bias.len()
    }

    /// One output row of every channel, from the three input rows around it (`above` and
    /// `below` are zeros at the image's edge). Each argument holds `channels` rows of
    /// `pitch` floats, of which the first `w` are pixels; only those are written.
    pub fn run_row(
        &self,
        [above, mid, below]: [&[f32]; 3],
        output: &mut [f32],
        pitch: usize,
        w: usize,
    ) {
        let len = self.channels() * pitch;
        assert!(w <= pitch, "depthwise row: {w} pixels in rows of {pitch}");
        for row in [above, mid, below] {
            assert_eq!(row.len(), len, "depthwise row input size");
        }
        assert_eq!(output.len(), len, "depthwise row output size");
        if w == 0 {
            return;
        }
        depthwise_row([above, mid, below], output, pitch, w, self);
    }
}

/// [`Depthwise3x3::run_row`] on AVX-512, 16 pixels a step. Each input row is loaded once
/// a step, and the taps are summed by column first: the left taps of the three rows, the
/// middle ones (from the bias) and the right ones, each over the step's own pixels. A
/// pixel's left neighbours are then the left column's sum shifted by one lane, with the
/// step before (`valignd`), and its right ones the right column's shifted the other way,
/// with the step after; zeros past the row's ends.
///
/// Shifting the sums, not the inputs, takes two shifts a step instead of six: on the
/// 2-core AMD VM of BENCHMARKS.md a shift of a 512-bit vector takes the place of most of a
/// multiply-add (9 multiply-adds alone ran in 9 cycles, with 6 shifts in 12.6, with 2
/// shifts and 2 adds in 9.2). With that, and whole vectors loaded and stored without a
/// mask ([`avx512::load`]), a row ran at 45 G multiply-adds a second instead of 34 (rows
/// of 4 to 64 channels of 160 pixels, L1 or L2 alike); either change alone gained little
/// (30-37). The sums' order differs from the portable kernel's, by float rounding. The
/// portable kernel loads nine shifted runs a step, most across two cache lines.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn depthwise_row_avx512(
    rows: [&[f32]; 3],
    y: &mut [f32],
    pitch: usize,
    w: usize,
    layer: &Depthwise3x3,
) {
    use avx512::*;
    use std::arch::x86_64::*;
    let zero = _mm512_setzero_ps();
    for (c, (k, &bias)) in layer.taps.iter().zip(&layer.bias).enumerate() {
        // (Not `rows.map`: `array::map` is compiled out of line.)
        let src = [
            &rows[0][c * pitch..][..w],
            &rows[1][c * pitch..][..w],
            &rows[2][c * pitch..][..w],
        ];
        let out = &mut y[c * pitch..][..w];
        let mut taps = [zero; 9];
        for (t, &v) in taps.iter_mut().zip(k) {
            *t = _mm512_set1_ps(v);
        }
        let bias = _mm512_set1_ps(bias);
        let sums_at = |s: usize| {
            let x = [load(src[0], s), load(src[1], s), load(src[2], s)];
            column_sums(x, &taps, bias)
        };
        let mut left_before = zero;
        let [mut left, mut middle, mut right] = sums_at(0);
        for s in (0..w).step_by(LANES) {
            let next = if s + LANES < w {
                sums_at(s + LANES)
            } else {
                [zero; 3]
            };
            let sides = _mm512_add_ps(shift_left(left, left_before), middle);
            let mut acc = _mm512_add_ps(sides, shift_right(right, next[2]));
            if layer.relu {
                acc = _mm512_max_ps(acc, zero);
            }
            store(out, s, acc);
            left_before = left;
            [left, middle, right] = next;
        }
    }
}

/// The vector helpers of [`depthwise_row_avx512`] (functions, not closures, so that they
/// are inlined).
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    /// Floats in a vector.
    pub const LANES: usize = 16;

    /// The mask of the lanes of a step at `s` that are pixels of a row of `len`, and their
    /// count.
    #[inline]
    fn pixels(len: usize, s: usize) -> (__mmask16, usize) {
        let n = (len - s).min(LANES);
        (if n == LANES { !0 } else { (1 << n) - 1 }, n)
    }

    /// The pixels `s..s + 16` of `run`, zeros past its end. A masked load only where the
    /// run ends: masked loads and stores of every step cost a fifth of the kernel's time
    /// on the VM of BENCHMARKS.md.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub fn load(run: &[f32], s: usize) -> __m512 {
        if s >= run.len() {
            return _mm512_setzero_ps();
        }
        if s + LANES <= run.len() {
            // SAFETY: reads the 16 floats of `run[s..s + 16]`.
            return unsafe { _mm512_loadu_ps(run[s..s + LANES].as_ptr()) };
        }
        let (mask, n) = pixels(run.len(), s);
        // SAFETY: the masked load reads only the `n` floats of `run[s..s + n]`.
        unsafe { _mm512_maskz_loadu_ps(mask, run[s..s + n].as_ptr()) }
    }

    /// `v` into the pixels `s..s + 16` of `out` that it has.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub fn store(out: &mut [f32], s: usize, v: __m512) {
        if s + LANES <= out.len() {
            // SAFETY: writes the 16 floats of `out[s..s + 16]`.
            return unsafe { _mm512_storeu_ps(out[s..s + LANES].as_mut_ptr(), v) };
        }
        let (mask, n) = pixels(out.len(), s);
        // SAFETY: the masked store writes only the `n` floats of `out[s..s + n]`.
        unsafe { _mm512_mask_storeu_ps(out[s..s + n].as_mut_ptr(), mask, v) }
    }

    /// The sums of the three rows `x` (top to bottom) by the 3x3 `taps`' left, middle and
    /// right columns, the middle one from `bias`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub fn column_sums(x: [__m512; 3], taps: &[__m512; 9], bias: __m512) -> [__m512; 3] {
        let column = |first: usize, from: __m512| {
            let sum = _mm512_fmadd_ps(taps[first], x[0], from);
            let sum = _mm512_fmadd_ps(taps[first + 3], x[1], sum);
            _mm512_fmadd_ps(taps[first + 6], x[2], sum)
        };
        let zero = _mm512_setzero_ps();
        [column(0, zero), column(1, bias), column(2, zero)]
    }

    /// The pixels one to the left of `here`'s: the last of `before`, then `here`'s first 15.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub fn shift_left(here: __m512, before: __m512) -> __m512 {
        let (here, before) = (_mm512_castps_si512(here), _mm512_castps_si512(before));
        _mm512_castsi512_ps(_mm512_alignr_epi32::<15>(here, before))
    }

    /// The pixels one to the right of `here`'s: `here`'s last 15, then the first of `after`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub fn shift_right(here: __m512, after: __m512) -> __m512 {
        let (here, after) = (_mm512_castps_si512(here), _mm512_castps_si512(after));
        _mm512_castsi512_ps(_mm512_alignr_epi32::<1>(after, here))
    }
}

/// Up to [`ROW_BLOCK`] pixels (`out.len()`) of a depthwise row from `start` of the nine
/// shifted input runs. (A function, not a closure: a closure is compiled without the
/// caller's target features unless inlined, and `mul_add` would then call libm.)
#[inline(always)]
fn depthwise_block<M: MulAdd>(
    taps: &[&[f32]; 9],
    start: usize,
    k: &[f32; 9],
    bias: f32,
    apply_relu: bool,
    out: &mut [f32],
) {
    let mut acc = [bias; ROW_BLOCK];
    let len = out.len();
    for (t, x) in taps.iter().enumerate() {
        for (a, &v) in acc.iter_mut().zip(&x[start..start + len]) {
            *a = M::mul_add(k[t], v, *a);
        }
    }
    for (o, &a) in out.iter_mut().zip(&acc) {
        *o = if apply_relu { relu(a) } else { a };
    }
}

/// Pixel `x` (the first or last) of a depthwise row, with the zero padding.
#[inline(always)]
fn depthwise_edge<M: MulAdd>(
    rows: &[&[f32]; 3],
    x: usize,
    w: usize,
    k: &[f32; 9],
    bias: f32,
    apply_relu: bool,
) -> f32 {
    let mut acc = bias;
    for (dy, row) in rows.iter().enumerate() {
        for dx in 0..3 {
            if let Some(xx) = (x + dx).checked_sub(1).filter(|&xx| xx < w) {
                acc = M::mul_add(k[dy * 3 + dx], row[xx], acc);
            }
        }
    }
    if apply_relu {
        relu(acc)
    } else {
        acc
    }
}

/// Pixels of a depthwise row computed as one block (a 512-bit vector of floats).
const ROW_BLOCK: usize = 16;

dispatch! {
    fn depthwise_row(rows: [&[f32]; 3], y: &mut [f32], pitch: usize, w: usize, layer: &Depthwise3x3) => depthwise_row_body
}

/// [`Depthwise3x3::run_row`]: per channel, the pixels off the left and right edges in one
/// vectorised loop over shifted slices, then the two edge pixels with the padding.
#[inline(always)]
fn depthwise_row_body<M: MulAdd>(
    [above, mid, below]: [&[f32]; 3],
    y: &mut [f32],
    pitch: usize,
    w: usize,
    layer: &Depthwise3x3,
) {
    #[cfg(target_arch = "x86_64")]
    if M::WIDE {
        // SAFETY: `dispatch!` runs the AVX-512 instantiation only where AVX-512F was found.
        return unsafe { depthwise_row_avx512([above, mid, below], y, pitch, w, layer) };
    }
    let apply_relu = layer.relu;
    for (c, (k, &b)) in layer.taps.iter().zip(&layer.bias).enumerate() {
        let rows = [
            &above[c * pitch..][..w],
            &mid[c * pitch..][..w],
            &below[c * pitch..][..w],
        ];
        let out = &mut y[c * pitch..][..w];
        if w >= 3 {
            let n = w - 2;
            let [a0, a1, a2] = [&rows[0][..n], &rows[0][1..n + 1], &rows[0][2..n + 2]];
            let [b0, b1, b2] = [&rows[1][..n], &rows[1][1..n + 1], &rows[1][2..n + 2]];
            let [c0, c1, c2] = [&rows[2][..n], &rows[2][1..n + 1], &rows[2][2..n + 2]];
            let inner = &mut out[1..n + 1];
            let taps = [a0, a1, a2, b0, b1, b2, c0, c1, c2];
            // Whole blocks of ROW_BLOCK pixels, the last one overlapping the one before
            // (rows are short: a remainder loop would be much of the work).
            if n >= ROW_BLOCK {
                let mut start = 0;
                loop {
                    depthwise_block::<M>(
                        &taps,
                        start,
                        k,
                        b,
                        apply_relu,
                        &mut inner[start..start + ROW_BLOCK],
                    );
                    if start + ROW_BLOCK == n {
                        break;
                    }
                    start = (start + ROW_BLOCK).min(n - ROW_BLOCK);
                }
            } else {
                depthwise_block::<M>(&taps, 0, k, b, apply_relu, inner);
            }
        }
        out[0] = depthwise_edge::<M>(&rows, 0, w, k, b, apply_relu);
        out[w - 1] = depthwise_edge::<M>(&rows, w - 1, w, k, b, apply_relu);
    }
}

/// SFace's depthwise layer: a 3x3 depthwise convolution with stride 1 or 2, zero padding 1
/// and bias, with a PReLU (a slope per channel) optionally applied to its input (the
/// activation of the layer before) and to its output. Fused so that neither PReLU makes a
/// pass of its own over an activation: tract ran SFace's 27 PReLUs as 6 ms of element-wise
/// ops and its depthwise layers at 3 multiply-adds a nanosecond (6.7 ms), a fifth of the
/// pace of its matrix products (`deepstack-bench profile --model sface`).
#[derive(Debug, Clone, PartialEq)]
pub struct DepthwisePRelu {
    /// Per channel, the 3x3 taps row-major.
    pub taps: Vec<[f32; 9]>,
    /// Per channel.
    pub bias: Vec<f32>,
    /// 1 or 2, both ways.
    pub stride: usize,
    /// The slopes of the PReLU applied to the input, if any, per channel.
    pub input_slopes: Option<Vec<f32>>,
    /// The slopes of the PReLU applied to the output, if any, per channel.
    pub output_slopes: Option<Vec<f32>>,
}

impl DepthwisePRelu {
    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.bias.len()
    }

    /// Output height or width for an input's (rounding up at stride 2, as ONNX does with
    /// padding 1 on both sides).
    pub fn output_side(&self, side: usize) -> usize {
        side.div_ceil(self.stride)
    }

    /// `input`: `channels` planes of `h` x `w`; `output`: as many of the output's size.
    ///
    /// Each input plane is first copied, through the input PReLU, into a zero-padded plane,
    /// split at stride 2 into its four phases (even or odd row, even or odd column), so
    /// that every tap of every output pixel is the same offset away in one of them: the
    /// whole output is then one vectorised run of nine multiply-adds a pixel (two columns
    /// of padding a row included), and its rows are copied out through the output PReLU.
    ///
    /// # Panics
    /// When the stride is not 1 or 2, or a buffer is not of its size.
    pub fn run(&self, input: &[f32], output: &mut [f32], h: usize, w: usize) {
        assert!(matches!(self.stride, 1 | 2), "stride {}", self.stride);
        let c = self.channels();
        let (oh, ow) = (self.output_side(h), self.output_side(w));
        assert_eq!(input.len(), c * h * w, "depthwise input size");
        assert_eq!(output.len(), c * oh * ow, "depthwise output size");
        for slopes in [&self.input_slopes, &self.output_slopes]
            .into_iter()
            .flatten()
        {
            assert_eq!(slopes.len(), c, "PReLU slopes");
        }
        if input.is_empty() || output.is_empty() {
            return;
        }
        let phase = PhaseLayout::new(self.stride, h, w);
        let mut padded = vec![0f32; phase.len()];
        let mut sums = vec![0f32; phase.outputs(oh, ow)];
        depthwise_prelu(self, input, output, (h, w), &phase, &mut padded, &mut sums);
    }
}

/// Where [`DepthwisePRelu::run`] puts the padded input: `stride * stride` phase planes of
/// `rows` rows of `pitch` floats; padded pixel `(y, x)` is at row `y / stride`, column
/// `x / stride` of phase `(y % stride) * stride + x % stride`.
#[derive(Debug, Clone, Copy)]
pub struct PhaseLayout {
    stride: usize,
    rows: usize,
    pitch: usize,
}

impl PhaseLayout {
    fn new(stride: usize, h: usize, w: usize) -> PhaseLayout {
        // The padded plane is (h + 2) x (w + 2).
        PhaseLayout {
            stride,
            rows: (h + 2).div_ceil(stride),
            pitch: (w + 2).div_ceil(stride),
        }
    }

    fn len(&self) -> usize {
        self.stride * self.stride * self.rows * self.pitch
    }

    /// Floats of the output run: `oh` rows of `pitch`, less what follows the last pixel.
    fn outputs(&self, oh: usize, ow: usize) -> usize {
        (oh - 1) * self.pitch + ow
    }

    /// Offset of tap `(dy, dx)` of output pixel 0 in the phase planes.
    fn tap(&self, dy: usize, dx: usize) -> usize {
        let s = self.stride;
        let phase = (dy % s) * s + dx % s;
        phase * self.rows * self.pitch + (dy / s) * self.pitch + dx / s
    }
}

dispatch! {
    fn depthwise_prelu(layer: &DepthwisePRelu, x: &[f32], y: &mut [f32], size: (usize, usize), phase: &PhaseLayout, padded: &mut [f32], sums: &mut [f32]) => depthwise_prelu_body
}

#[inline(always)]
fn prelu(v: f32, slope: f32) -> f32 {
    if v > 0.0 {
        v
    } else {
        slope * v
    }
}

#[inline(always)]
fn depthwise_prelu_body<M: MulAdd>(
    layer: &DepthwisePRelu,
    x: &[f32],
    y: &mut [f32],
    (h, w): (usize, usize),
    phase: &PhaseLayout,
    padded: &mut [f32],
    sums: &mut [f32],
) {
    let s = layer.stride;
    let (oh, ow) = (layer.output_side(h), layer.output_side(w));
    let n = sums.len();
    let (rows, pitch) = (phase.rows, phase.pitch);
    for (c, (k, &bias)) in layer.taps.iter().zip(&layer.bias).enumerate() {
        let plane = &x[c * h * w..][..h * w];
        let in_slope = layer.input_slopes.as_ref().map(|v| v[c]);
        // Padded row y + 1, column x + 1 holds input pixel (y, x).
        for (yy, row) in plane.chunks_exact(w).enumerate() {
            let py = yy + 1;
            let row_base = (py % s) * s * rows * pitch + (py / s) * pitch;
            if s == 1 {
                let dst = &mut padded[row_base + 1..][..w];
                fill_row(dst, row, in_slope);
            } else {
                // Column x + 1: the odd columns of the padded row (phase 1) take the even x,
                // from column 0; the even ones (phase 0) the odd x, from column 1.
                let (even, odd) = padded[row_base..].split_at_mut(rows * pitch);
                let pairs = row.chunks_exact(2);
                let last = pairs.remainder().first().copied();
                let dst = odd.iter_mut().zip(&mut even[1..]).zip(pairs);
                let slope = in_slope.unwrap_or(1.0);
                for ((o, e), pair) in dst {
                    (*o, *e) = (prelu(pair[0], slope), prelu(pair[1], slope));
                }
                if let Some(v) = last {
                    odd[w / 2] = prelu(v, slope);
                }
            }
        }
        let t = |dy: usize, dx: usize| &padded[phase.tap(dy, dx)..][..n];
        let [a0, a1, a2] = [t(0, 0), t(0, 1), t(0, 2)];
        let [b0, b1, b2] = [t(1, 0), t(1, 1), t(1, 2)];
        let [c0, c1, c2] = [t(2, 0), t(2, 1), t(2, 2)];
        for i in 0..n {
            let mut acc = M::mul_add(k[0], a0[i], bias);
            acc = M::mul_add(k[1], a1[i], acc);
            acc = M::mul_add(k[2], a2[i], acc);
            acc = M::mul_add(k[3], b0[i], acc);
            acc = M::mul_add(k[4], b1[i], acc);
            acc = M::mul_add(k[5], b2[i], acc);
            acc = M::mul_add(k[6], c0[i], acc);
            acc = M::mul_add(k[7], c1[i], acc);
            acc = M::mul_add(k[8], c2[i], acc);
            sums[i] = acc;
        }
        let out_slope = layer.output_slopes.as_ref().map(|v| v[c]);
        let out = &mut y[c * oh * ow..][..oh * ow];
        for (r, dst) in out.chunks_exact_mut(ow).enumerate() {
            fill_row(dst, &sums[r * pitch..][..ow], out_slope);
        }
    }
}

/// A PReLU of `slopes.len()` planes: `y = x` where `x > 0`, else `slope * x`.
pub fn prelu_planes(x: &[f32], y: &mut [f32], slopes: &[f32]) {
    assert_eq!(x.len(), y.len(), "PReLU sizes");
    let plane = x.len() / slopes.len().max(1);
    assert_eq!(plane * slopes.len(), x.len(), "PReLU planes");
    if plane == 0 {
        return;
    }
    for ((x, y), &slope) in x
        .chunks_exact(plane)
        .zip(y.chunks_exact_mut(plane))
        .zip(slopes)
    {
        fill_row(y, x, Some(slope));
    }
}

/// `dst = prelu(src)` with `slope`, or a copy without one.
#[inline(always)]
fn fill_row(dst: &mut [f32], src: &[f32], slope: Option<f32>) {
    match slope {
        Some(sl) => {
            for (d, &v) in dst.iter_mut().zip(src) {
                *d = prelu(v, sl);
            }
        }
        None => dst.copy_from_slice(src),
    }
}

/// Output channels computed together by the pointwise kernel: each input pixel run loaded
/// is used this many times. Six fill AVX2's and NEON's registers with [`POINTWISE_PIXELS`];
/// AVX-512 has room for eight ([`Isa::pointwise_block`]), which also divides YuNet's 16, 32
/// and 64 channels (blocks of six computed 18 of 16 and 36 of 32).
const POINTWISE_CHANNELS: usize = 6;
/// [`POINTWISE_CHANNELS`] on AVX-512.
const POINTWISE_CHANNELS_WIDE: usize = 8;
/// Pixels per step of the pointwise kernel: with [`POINTWISE_CHANNELS`], 12 accumulators of
/// 256 bits (of AVX2's 16 registers) or 24 of 128 (of NEON's 32).
pub const POINTWISE_PIXELS: usize = 16;

impl Isa {
    /// Output channels per block of the pointwise kernel's packed weights.
    fn pointwise_block(self) -> usize {
        match self {
            Isa::Avx512 => POINTWISE_CHANNELS_WIDE,
            Isa::Avx2Fma | Isa::Baseline => POINTWISE_CHANNELS,
        }
    }
}

/// A 1x1 convolution with bias and optional ReLU: `y[o] = b[o] + sum_i W[o][i] x[i]` per
/// pixel.
#[derive(Debug, Clone, PartialEq)]
pub struct Pointwise {
    inputs: usize,
    outputs: usize,
    /// Output channels per block of `packed`: [`Isa::pointwise_block`].
    block: usize,
    /// The weights in blocks of `block` outputs, each block input-major
    /// (`[input][output in block]`), the last block zero-filled.
    packed: Vec<f32>,
    /// Per output, then zeros up to a whole block: a block's biases are read in place.
    bias: Vec<f32>,
    relu: bool,
}

impl Pointwise {
    /// `weights` row-major `[outputs][inputs]`.
    pub fn new(weights: &[f32], mut bias: Vec<f32>, inputs: usize, relu: bool) -> Pointwise {
        let outputs = bias.len();
        assert_eq!(weights.len(), outputs * inputs, "pointwise weights size");
        let block = Isa::detect().pointwise_block();
        bias.resize(outputs.div_ceil(block) * block, 0.0);
        let mut packed = vec![0f32; outputs.div_ceil(block) * inputs * block];
        for o in 0..outputs {
            for i in 0..inputs {
                packed[((o / block) * inputs + i) * block + o % block] = weights[o * inputs + i];
            }
        }
        Pointwise {
            inputs,
            outputs,
            block,
            packed,
            bias,
            relu,
        }
    }

    /// Number of input channels.
    pub fn inputs(&self) -> usize {
        self.inputs
    }

    /// Number of output channels.
    pub fn outputs(&self) -> usize {
        self.outputs
    }

    /// The weight of input `i` in output `o`.
    #[cfg(test)]
    fn weight(&self, o: usize, i: usize) -> f32 {
        self.packed[((o / self.block) * self.inputs + i) * self.block + o % self.block]
    }

    /// One row of every channel: `input` holds `inputs` rows of `pitch` pixels, `output`
    /// `outputs` rows of `pitch`; `pitch` is a multiple of [`POINTWISE_PIXELS`] (a row's
    /// padding is computed like its pixels). The rows of one tile of pixels stay in the L1
    /// cache while every output is computed for it.
    /// `tile` is scratch, kept by the caller from row to row (the daemon's malloc has one
    /// arena, which threads allocating on every row would queue for): the AVX2 and NEON
    /// kernels copy a tile's runs of pixels into it, next to each other; the AVX-512 one
    /// reads them in place (the copy cost it 3-15% of its rate on the VM of BENCHMARKS.md:
    /// 45 -> 52 G multiply-adds a second on 16 channels of 320 pixels, 55 -> 56.5 on 64 of
    /// 160).
    pub fn run_row(&self, input: &[f32], output: &mut [f32], pitch: usize, tile: &mut Vec<f32>) {
        assert_eq!(input.len(), self.inputs * pitch, "pointwise row input size");
        self.run_row_from(input, pitch, output, pitch, tile);
    }

    /// [`Pointwise::run_row`] on input rows `stride` floats apart instead of `pitch`, each
    /// of `pitch` floats (a chain reads its input planes in place: the rows of a plane of
    /// `h` x `pitch` are `h * pitch` apart).
    pub fn run_row_from(
        &self,
        input: &[f32],
        stride: usize,
        output: &mut [f32],
        pitch: usize,
        tile: &mut Vec<f32>,
    ) {
        assert_eq!(pitch % POINTWISE_PIXELS, 0, "pointwise row pitch {pitch}");
        assert!(stride >= pitch, "pointwise rows {stride} apart, of {pitch}");
        assert!(
            self.inputs == 0 || input.len() >= (self.inputs - 1) * stride + pitch,
            "pointwise row input size"
        );
        assert_eq!(
            output.len(),
            self.outputs * pitch,
            "pointwise row output size"
        );
        if self.inputs == 0 {
            return;
        }
        let len = self.inputs * 2 * POINTWISE_PIXELS;
        if tile.len() < len {
            tile.resize(len, 0.0);
        }
        pointwise_row(input, stride, output, pitch, self, &mut tile[..len]);
    }
}

dispatch! {
    fn pointwise_row(x: &[f32], stride: usize, y: &mut [f32], pitch: usize, layer: &Pointwise, tile: &mut [f32]) => pointwise_row_body
}

#[inline(always)]
fn pointwise_row_body<M: MulAdd>(
    x: &[f32],
    stride: usize,
    y: &mut [f32],
    pitch: usize,
    layer: &Pointwise,
    tile: &mut [f32],
) {
    const P: usize = POINTWISE_PIXELS;
    let x = Runs { data: x, stride };
    let mut p = 0;
    // With AVX-512's 32 registers, two tiles of eight outputs at once: 16 accumulators, and
    // each weight broadcast serves twice the pixels.
    if M::WIDE {
        const K: usize = POINTWISE_CHANNELS_WIDE;
        assert_eq!(layer.block, K, "pointwise weights packed for AVX-512");
        while p + 2 * P <= pitch {
            let tile_of = pointwise_tile_8::<M, { 2 * P }>;
            pointwise_row_tile(tile_of, &x, y, pitch, p, None, layer);
            p += 2 * P;
        }
        while p < pitch {
            let tile_of = pointwise_tile_8::<M, P>;
            pointwise_row_tile(tile_of, &x, y, pitch, p, None, layer);
            p += P;
        }
    } else {
        const K: usize = POINTWISE_CHANNELS;
        assert_eq!(layer.block, K, "pointwise weights packed in blocks of six");
        // On aarch64 the tile in NEON intrinsics: the compiler's own vectorisation of the
        // portable tile spilled its accumulators there (see `neon`).
        #[cfg(target_arch = "aarch64")]
        let tile_of = neon::pointwise_tile_6;
        #[cfg(not(target_arch = "aarch64"))]
        let tile_of = pointwise_tile_6::<M, P>;
        while p < pitch {
            pointwise_row_tile(tile_of, &x, y, pitch, p, Some(tile), layer);
            p += P;
        }
    }
}

/// The pointwise tile on aarch64.
#[cfg(target_arch = "aarch64")]
mod neon {
    use super::{POINTWISE_CHANNELS, POINTWISE_PIXELS};
    use std::arch::aarch64::*;

    const K: usize = POINTWISE_CHANNELS;
    const P: usize = POINTWISE_PIXELS;

    /// The tile of six outputs by 16 pixels in NEON intrinsics: 24 accumulators of 4
    /// floats, and per input channel 4 loads of pixels, 2 of weights and 24 multiply-adds by
    /// lane. Written by hand because the compiler's vectorisation of the portable tile kept
    /// the accumulators in memory and did most multiply-adds one float at a time: YuNet at
    /// 416x320 executed 260 M instructions under qemu-aarch64, against 117 M for tract's own
    /// kernels (BENCHMARKS.md, the Raspberry Pi). The same sums in the same order (the bias,
    /// then each input's product, fused).
    #[inline]
    pub fn pointwise_tile_6(
        runs: &[f32],
        stride: usize,
        weights: &[f32],
        bias: &[f32; K],
    ) -> [[f32; P]; K] {
        // SAFETY: NEON is part of aarch64's baseline.
        unsafe { tile_6(runs, stride, weights, bias) }
    }

    #[inline]
    #[target_feature(enable = "neon")]
    fn tile_6(runs: &[f32], stride: usize, weights: &[f32], bias: &[f32; K]) -> [[f32; P]; K] {
        let mut acc = [[vdupq_n_f32(0.0); 4]; K];
        for (acc, &b) in acc.iter_mut().zip(bias) {
            *acc = [vdupq_n_f32(b); 4];
        }
        for (i, wk) in weights.chunks_exact(K).enumerate() {
            let xs = &runs[i * stride..][..P];
            // SAFETY: `xs` holds 16 floats and `wk` 6: each load reads within its slice.
            let (x, w0, w1) = unsafe {
                (
                    [
                        vld1q_f32(xs[0..4].as_ptr()),
                        vld1q_f32(xs[4..8].as_ptr()),
                        vld1q_f32(xs[8..12].as_ptr()),
                        vld1q_f32(xs[12..16].as_ptr()),
                    ],
                    vld1q_f32(wk[0..4].as_ptr()),
                    vld1_f32(wk[4..6].as_ptr()),
                )
            };
            for q in 0..4 {
                acc[0][q] = vfmaq_laneq_f32::<0>(acc[0][q], x[q], w0);
                acc[1][q] = vfmaq_laneq_f32::<1>(acc[1][q], x[q], w0);
                acc[2][q] = vfmaq_laneq_f32::<2>(acc[2][q], x[q], w0);
                acc[3][q] = vfmaq_laneq_f32::<3>(acc[3][q], x[q], w0);
                acc[4][q] = vfmaq_lane_f32::<0>(acc[4][q], x[q], w1);
                acc[5][q] = vfmaq_lane_f32::<1>(acc[5][q], x[q], w1);
            }
        }
        let mut out = [[0f32; P]; K];
        for (out, acc) in out.iter_mut().zip(&acc) {
            for (run, &v) in out.chunks_exact_mut(4).zip(acc) {
                // SAFETY: `run` holds 4 floats.
                unsafe { vst1q_f32(run.as_mut_ptr(), v) };
            }
        }
        out
    }
}

/// A pointwise layer's input row: a run of pixels of each input, `stride` floats apart.
struct Runs<'a> {
    data: &'a [f32],
    stride: usize,
}

/// Pixels `p..p + T` of a [`Pointwise::run_row`], every output, `K` at a time by `tile_of`
/// (a `pointwise_tile_*`).
#[inline(always)]
fn pointwise_row_tile<const T: usize, const K: usize>(
    tile_of: impl Fn(&[f32], usize, &[f32], &[f32; K]) -> [[f32; T]; K],
    x: &Runs,
    y: &mut [f32],
    pitch: usize,
    p: usize,
    tile: Option<&mut [f32]>,
    layer: &Pointwise,
) {
    let (inputs, outputs) = (layer.inputs, layer.outputs);
    // The inputs' runs of pixels: copied next to each other into `tile`, or read in place.
    let (runs, stride): (&[f32], usize) = match tile {
        Some(tile) => {
            let tile = &mut tile[..inputs * T];
            for (i, row) in tile.chunks_exact_mut(T).enumerate() {
                // Element by element: a copy of T floats would be a call to memmove.
                for (d, &v) in row.iter_mut().zip(&x.data[i * x.stride + p..][..T]) {
                    *d = v;
                }
            }
            (tile, T)
        }
        None => (&x.data[p..], x.stride),
    };
    for block in 0..outputs.div_ceil(K) {
        let first = block * K;
        let count = K.min(outputs - first);
        let weights = &layer.packed[block * inputs * K..][..inputs * K];
        let bias = layer.bias[first..first + K].try_into().expect("K biases");
        let acc = tile_of(runs, stride, weights, bias);
        for (k, a) in acc.iter().enumerate().take(count) {
            let out: &mut [f32; T] = (&mut y[(first + k) * pitch + p..][..T])
                .try_into()
                .expect("T");
            store_activated(out, a, layer.relu);
        }
    }
}

/// `out = relu(acc)` or `acc`, element by element. (A loop, not `array::map`: that is
/// compiled out of line, without the caller's target features.)
#[inline(always)]
fn store_activated<const T: usize>(out: &mut [f32; T], acc: &[f32; T], apply_relu: bool) {
    if apply_relu {
        for (o, &a) in out.iter_mut().zip(acc) {
            *o = relu(a);
        }
    } else {
        *out = *acc;
    }
}

/// `acc += w * xs`, pixel by pixel.
#[inline(always)]
fn multiply_add_run<M: MulAdd, const P: usize>(acc: &mut [f32; P], w: f32, xs: &[f32; P]) {
    for (a, &x) in acc.iter_mut().zip(xs) {
        *a = M::mul_add(w, x, *a);
    }
}

/// Defines `$name::<M, P>(tile, weights, bias)`: one tile of `P` pixels (`[input][pixel]`)
/// for `$k` outputs. Each output's accumulator is a variable of its own, started at its
/// bias: indexed through an array of eight (256 multiply-adds a step), they were kept in
/// memory, 20x slower; so were six started at the bias by a loop.
macro_rules! pointwise_tile {
    ($name:ident, $k:literal: $($acc:ident $i:literal),*) => {
        #[inline(always)]
        fn $name<M: MulAdd, const P: usize>(
            x: &[f32],
            stride: usize,
            weights: &[f32],
            bias: &[f32; $k],
        ) -> [[f32; P]; $k] {
            $(let mut $acc = [bias[$i]; P];)*
            for (i, wk) in weights.chunks_exact($k).enumerate() {
                let xs: &[f32; P] = x[i * stride..][..P].try_into().expect("P pixels");
                $(multiply_add_run::<M, P>(&mut $acc, wk[$i], xs);)*
            }
            [$($acc),*]
        }
    };
}

#[cfg(not(target_arch = "aarch64"))]
pointwise_tile!(pointwise_tile_6, 6: a0 0, a1 1, a2 2, a3 3, a4 4, a5 5);
pointwise_tile!(pointwise_tile_8, 8: a0 0, a1 1, a2 2, a3 3, a4 4, a5 5, a6 6, a7 7);

/// One output row of a 2x2 max pool (stride 2) of every channel: `output` holds
/// `channels` output rows of `out_pitch` floats, of which the first `ow` are written; `top`
/// and `bottom` as many input rows, `pitch` floats apart (the rows of a ring, or of planes
/// read in place), of which the first `2 * ow` are read.
pub fn max_pool_2x2_row(
    top: &[f32],
    bottom: &[f32],
    output: &mut [f32],
    pitch: usize,
    out_pitch: usize,
    ow: usize,
) {
    assert!(2 * ow <= pitch && ow <= out_pitch, "max pool row sizes");
    let channels = output.len() / out_pitch.max(1);
    assert_eq!(
        output.len(),
        channels * out_pitch,
        "max pool row output size"
    );
    let need = channels.saturating_sub(1) * pitch + 2 * ow;
    assert!(top.len() >= need && bottom.len() >= need, "max pool rows");
    max_pool_row(top, bottom, output, (pitch, out_pitch, ow, channels));
}

dispatch! {
    fn max_pool_row(top: &[f32], bottom: &[f32], output: &mut [f32], sizes: (usize, usize, usize, usize)) => max_pool_row_body
}

/// [`max_pool_2x2_row`], compiled for the CPU's widest vectors: for the baseline's SSE, 4
/// floats a step, it took 3.6% of a detection at 640x480 (`profile --only ours` under
/// perf).
#[inline(always)]
fn max_pool_row_body<M: MulAdd>(
    top: &[f32],
    bottom: &[f32],
    output: &mut [f32],
    (pitch, out_pitch, ow, channels): (usize, usize, usize, usize),
) {
    for c in 0..channels {
        let (t, b) = (&top[c * pitch..][..2 * ow], &bottom[c * pitch..][..2 * ow]);
        let out = &mut output[c * out_pitch..][..ow];
        for (j, o) in out.iter_mut().enumerate() {
            let l = if t[2 * j] > b[2 * j] {
                t[2 * j]
            } else {
                b[2 * j]
            };
            let r = if t[2 * j + 1] > b[2 * j + 1] {
                t[2 * j + 1]
            } else {
                b[2 * j + 1]
            };
            *o = if l > r { l } else { r };
        }
    }
}

/// `out[x] = fine[x] + coarse[x / 2]`: a row of a sum of an activation and a coarser one
/// upsampled 2x by nearest neighbour (YuNet's neck), for `out.len()` pixels.
pub fn add_upsampled_row(fine: &[f32], coarse: &[f32], out: &mut [f32]) {
    let w = out.len();
    assert!(
        fine.len() >= w && 2 * coarse.len() >= w,
        "upsampled sum row sizes"
    );
    add_upsampled(&fine[..w], &coarse[..w.div_ceil(2)], out);
}

dispatch! {
    fn add_upsampled(fine: &[f32], coarse: &[f32], out: &mut [f32]) => add_upsampled_body
}

#[inline(always)]
fn add_upsampled_body<M: MulAdd>(fine: &[f32], coarse: &[f32], out: &mut [f32]) {
    let pairs = out.len() / 2;
    for ((o, f), &c) in out
        .chunks_exact_mut(2)
        .zip(fine.chunks_exact(2))
        .zip(&coarse[..pairs])
    {
        o[0] = f[0] + c;
        o[1] = f[1] + c;
    }
    if out.len() % 2 == 1 {
        out[2 * pairs] = fine[2 * pairs] + coarse[pairs];
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Deterministic values in -1..1 (the chain's tests use them too).
    pub(crate) fn values(n: usize, seed: u32) -> Vec<f32> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (s as f32 / u32::MAX as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{i}: {x} vs {y}");
        }
    }

    /// What a depthwise layer gives, by a direct loop over `channels` planes of `h` x `w`.
    pub(crate) fn depthwise_reference(
        op: &Depthwise3x3,
        x: &[f32],
        h: usize,
        w: usize,
    ) -> Vec<f32> {
        let mut y = vec![0f32; x.len()];
        for ch in 0..op.channels() {
            for r in 0..h {
                for col in 0..w {
                    let mut acc = op.bias[ch];
                    for dy in 0..3 {
                        for dx in 0..3 {
                            let (yy, xx) = ((r + dy) as isize - 1, (col + dx) as isize - 1);
                            if yy >= 0 && xx >= 0 && (yy as usize) < h && (xx as usize) < w {
                                acc += op.taps[ch][dy * 3 + dx]
                                    * x[ch * h * w + yy as usize * w + xx as usize];
                            }
                        }
                    }
                    y[ch * h * w + r * w + col] = if op.relu { acc.max(0.0) } else { acc };
                }
            }
        }
        y
    }

    /// What a pointwise layer gives, by a direct loop over `inputs` planes of `plane` pixels.
    pub(crate) fn pointwise_reference(op: &Pointwise, x: &[f32], plane: usize) -> Vec<f32> {
        (0..op.outputs * plane)
            .map(|idx| {
                let (o, p) = (idx / plane, idx % plane);
                let v = op.bias[o]
                    + (0..op.inputs)
                        .map(|i| op.weight(o, i) * x[i * plane + p])
                        .sum::<f32>();
                if op.relu {
                    v.max(0.0)
                } else {
                    v
                }
            })
            .collect()
    }

    /// A 2x2 max pool (stride 2, odd edges dropped), by a direct loop.
    pub(crate) fn max_pool_reference(x: &[f32], c: usize, h: usize, w: usize) -> Vec<f32> {
        let (oh, ow) = (h / 2, w / 2);
        let mut y = Vec::with_capacity(c * oh * ow);
        for ch in 0..c {
            for r in 0..oh {
                for col in 0..ow {
                    let at = |yy: usize, xx: usize| x[ch * h * w + yy * w + xx];
                    let m = at(2 * r, 2 * col)
                        .max(at(2 * r, 2 * col + 1))
                        .max(at(2 * r + 1, 2 * col))
                        .max(at(2 * r + 1, 2 * col + 1));
                    y.push(m);
                }
            }
        }
        y
    }

    /// `c` planes of `h` x `w` as `h` rows of every channel, `pitch` floats a channel's row.
    fn rows_of(x: &[f32], c: usize, h: usize, w: usize, pitch: usize) -> Vec<Vec<f32>> {
        (0..h)
            .map(|r| {
                let mut row = vec![0f32; c * pitch];
                for ch in 0..c {
                    row[ch * pitch..][..w].copy_from_slice(&x[ch * h * w + r * w..][..w]);
                }
                row
            })
            .collect()
    }

    #[test]
    fn depthwise_rows_match_a_direct_loop() {
        // Rows shorter than a block, of one block, and with an overlapping last block (a
        // vector past it on AVX-512 but for whole vectors).
        for (c, h, w, relu) in [
            (3, 5, 7, true),
            (2, 1, 1, false),
            (4, 6, 2, true),
            (16, 9, 40, false),
            (2, 3, 18, true),
            (1, 2, 16, true),
            (2, 3, 32, false),
        ] {
            let op = Depthwise3x3 {
                taps: (0..c)
                    .map(|i| values(9, 10 + i as u32).try_into().unwrap())
                    .collect(),
                bias: values(c, 3),
                relu,
            };
            let x = values(c * h * w, 1);
            let pitch = w + 5;
            let rows = rows_of(&x, c, h, w, pitch);
            let zeros = vec![0f32; c * pitch];
            let expected = depthwise_reference(&op, &x, h, w);
            for r in 0..h {
                let above = if r > 0 { &rows[r - 1] } else { &zeros };
                let below = rows.get(r + 1).unwrap_or(&zeros);
                let mut out = vec![f32::NAN; c * pitch];
                op.run_row([above, &rows[r], below], &mut out, pitch, w);
                // The portable kernel too, where run_row takes the AVX-512 one.
                let mut portable = vec![f32::NAN; c * pitch];
                let input = [above.as_slice(), &rows[r], below];
                depthwise_row_body::<Separate>(input, &mut portable, pitch, w, &op);
                for ch in 0..c {
                    let expected = &expected[ch * h * w + r * w..][..w];
                    close(&out[ch * pitch..][..w], expected);
                    close(&portable[ch * pitch..][..w], expected);
                }
            }
        }
    }

    #[test]
    fn depthwise_prelu_matches_a_direct_loop_at_both_strides() {
        for (c, h, w, stride, prelus) in [
            (3, 5, 7, 2, (true, true)),
            (2, 1, 1, 2, (false, true)),
            (4, 6, 2, 1, (true, false)),
            (5, 14, 14, 2, (true, true)),
            (3, 7, 7, 1, (false, false)),
            (16, 9, 40, 1, (true, true)),
        ] {
            let x = values(c * h * w, 1);
            let slopes = |on: bool, seed| on.then(|| values(c, seed));
            let op = DepthwisePRelu {
                taps: (0..c)
                    .map(|i| values(9, 10 + i as u32).try_into().unwrap())
                    .collect(),
                bias: values(c, 3),
                stride,
                input_slopes: slopes(prelus.0, 20),
                output_slopes: slopes(prelus.1, 21),
            };
            let (oh, ow) = (op.output_side(h), op.output_side(w));
            let mut y = vec![f32::NAN; c * oh * ow];
            op.run(&x, &mut y, h, w);
            let prelu = |v: f32, s: Option<&Vec<f32>>, ch: usize| match s {
                Some(s) if v < 0.0 => s[ch] * v,
                _ => v,
            };
            let mut expected = vec![0f32; y.len()];
            for ch in 0..c {
                for r in 0..oh {
                    for col in 0..ow {
                        let mut acc = op.bias[ch];
                        for dy in 0..3 {
                            for dx in 0..3 {
                                let yy = (r * stride + dy) as isize - 1;
                                let xx = (col * stride + dx) as isize - 1;
                                if yy >= 0 && xx >= 0 && (yy as usize) < h && (xx as usize) < w {
                                    let v = x[ch * h * w + yy as usize * w + xx as usize];
                                    acc += op.taps[ch][dy * 3 + dx]
                                        * prelu(v, op.input_slopes.as_ref(), ch);
                                }
                            }
                        }
                        expected[ch * oh * ow + r * ow + col] =
                            prelu(acc, op.output_slopes.as_ref(), ch);
                    }
                }
            }
            close(&y, &expected);
        }
    }

    #[test]
    fn pointwise_rows_match_a_direct_loop() {
        // Output counts below, at and above a block; one tile, two, three (odd on AVX-512).
        for (inputs, outputs, tiles, relu) in
            [(3, 1, 1, false), (16, 6, 4, true), (7, 13, 3, false)]
        {
            let pitch = tiles * POINTWISE_PIXELS;
            let x = values(inputs * pitch, 4);
            let op = Pointwise::new(
                &values(inputs * outputs, 5),
                values(outputs, 6),
                inputs,
                relu,
            );
            let mut y = vec![f32::NAN; outputs * pitch];
            op.run_row(&x, &mut y, pitch, &mut Vec::new());
            close(&y, &pointwise_reference(&op, &x, pitch));
        }
    }

    /// What `conv_ops` merging YuNet's heads relies on: one layer of all the heads' channels
    /// (1, 4, 1 and 10 of them) computes each channel as the head's own layer does, bit for
    /// bit, the 1x1 and the depthwise layer alike.
    #[test]
    fn a_layer_of_several_heads_gives_each_heads_rows_bit_for_bit() {
        let (inputs, heads, pitch, w) = (64, [1, 4, 1, 10], 3 * POINTWISE_PIXELS, 40);
        let outputs: usize = heads.iter().sum();
        let (weights, bias) = (values(inputs * outputs, 7), values(outputs, 8));
        let (taps, dw_bias) = (values(9 * outputs, 9), values(outputs, 10));
        let taps: Vec<[f32; 9]> = taps
            .chunks_exact(9)
            .map(|t| t.try_into().unwrap())
            .collect();
        let x = values(inputs * pitch, 11);
        let rows: Vec<Vec<f32>> = (0..3).map(|k| values(outputs * pitch, 12 + k)).collect();
        let depthwise = |taps: &[[f32; 9]], bias: &[f32]| Depthwise3x3 {
            taps: taps.to_vec(),
            bias: bias.to_vec(),
            relu: false,
        };
        let all_pw = Pointwise::new(&weights, bias.clone(), inputs, false);
        let all_dw = depthwise(&taps, &dw_bias);
        let mut pw_all = vec![0f32; outputs * pitch];
        all_pw.run_row(&x, &mut pw_all, pitch, &mut Vec::new());
        let mut dw_all = vec![0f32; outputs * pitch];
        all_dw.run_row([&rows[0], &rows[1], &rows[2]], &mut dw_all, pitch, w);
        let mut first = 0;
        for n in heads {
            let own = first..first + n;
            let pw = Pointwise::new(
                &weights[own.start * inputs..own.end * inputs],
                bias[own.clone()].to_vec(),
                inputs,
                false,
            );
            let mut y = vec![0f32; n * pitch];
            pw.run_row(&x, &mut y, pitch, &mut Vec::new());
            assert_eq!(
                y,
                pw_all[own.start * pitch..own.end * pitch],
                "1x1, head at {first}"
            );
            let dw = depthwise(&taps[own.clone()], &dw_bias[own.clone()]);
            let head_rows: Vec<&[f32]> = rows
                .iter()
                .map(|r| &r[own.start * pitch..own.end * pitch])
                .collect();
            let mut y = vec![0f32; n * pitch];
            dw.run_row([head_rows[0], head_rows[1], head_rows[2]], &mut y, pitch, w);
            let got = &dw_all[own.start * pitch..own.end * pitch];
            for c in 0..n {
                let row = c * pitch..c * pitch + w;
                assert_eq!(y[row.clone()], got[row], "depthwise, head at {first}");
            }
            first += n;
        }
    }

    #[test]
    fn an_upsampled_sum_adds_each_coarse_pixel_to_two_fine_ones() {
        for w in [1, 2, 7, 16, 33, 80] {
            let (fine, coarse) = (values(w, 1), values(w.div_ceil(2), 2));
            let mut out = vec![f32::NAN; w];
            add_upsampled_row(&fine, &coarse, &mut out);
            let expected: Vec<f32> = (0..w).map(|x| fine[x] + coarse[x / 2]).collect();
            assert_eq!(out, expected, "{w} pixels");
        }
    }

    #[test]
    fn max_pool_rows_take_the_largest_of_each_square_and_drop_an_odd_edge() {
        let (c, h, w, pitch) = (2, 5, 7, 9);
        let x = values(c * h * w, 7);
        let rows = rows_of(&x, c, h, w, pitch);
        let expected = max_pool_reference(&x, c, h, w);
        let (oh, ow, out_pitch) = (h / 2, w / 2, 4);
        for r in 0..oh {
            let mut out = vec![f32::NAN; c * out_pitch];
            max_pool_2x2_row(
                &rows[2 * r],
                &rows[2 * r + 1],
                &mut out,
                pitch,
                out_pitch,
                ow,
            );
            for ch in 0..c {
                assert_eq!(
                    &out[ch * out_pitch..][..ow],
                    &expected[ch * oh * ow + r * ow..][..ow]
                );
            }
        }
    }
}
