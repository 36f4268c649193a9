//! The hot loops of SFace's int8 last layer (`vision::linear_head`, int8 codes with f32
//! values) and of the gallery's templates (f32 with f32).
//!
//! Written so the compiler vectorises it (independent accumulators; float addition is not
//! associative, so a plain `sum()` would stay scalar), and compiled twice on x86-64: for the
//! baseline (SSE2) and for AVX2, picked at run time. On aarch64 NEON is the baseline.

/// `q . x` for int8 or f32 `q`, with 16 independent accumulators (so the compiler vectorises
/// it), in AVX2 where the CPU has it (checked once per call; the check is a cached load).
pub fn dot<T: Copy>(q: &[T], x: &[f32]) -> f32
where
    f32: From<T>,
{
    debug_assert_eq!(q.len(), x.len(), "dot product of unequal lengths");
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked above).
        return unsafe { dot_avx2(q, x) };
    }
    dot_portable(q, x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_avx2<T: Copy>(q: &[T], x: &[f32]) -> f32
where
    f32: From<T>,
{
    dot_portable(q, x)
}

/// The loop itself.
#[inline(always)]
fn dot_portable<T: Copy>(q: &[T], x: &[f32]) -> f32
where
    f32: From<T>,
{
    const LANES: usize = 16;
    let mut acc = [0f32; LANES];
    let (qc, xc) = (q.chunks_exact(LANES), x.chunks_exact(LANES));
    let (q_rest, x_rest) = (qc.remainder(), xc.remainder());
    for (cq, cx) in qc.zip(xc) {
        for k in 0..LANES {
            acc[k] += f32::from(cq[k]) * cx[k];
        }
    }
    let tail: f32 = q_rest
        .iter()
        .zip(x_rest)
        .map(|(&a, b)| f32::from(a) * b)
        .sum();
    acc.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_dot_equals_the_plain_sum_for_every_length() {
        for len in [0, 1, 15, 16, 17, 128, 131] {
            let a: Vec<f32> = (0..len).map(|i| (i as f32 * 0.3).sin()).collect();
            let b: Vec<f32> = (0..len).map(|i| (i as f32 * 0.7).cos()).collect();
            let plain: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((dot(&a, &b) - plain).abs() < 1e-4, "length {len}");
        }
    }

    #[test]
    fn equals_the_plain_sum_for_every_length() {
        for len in [0, 1, 15, 16, 17, 128, 131] {
            let q: Vec<i8> = (0..len).map(|i| (i * 29 % 255 - 127) as i8).collect();
            let x: Vec<f32> = (0..len).map(|i| (i as f32 * 0.7).cos()).collect();
            let plain: f32 = q.iter().zip(&x).map(|(&a, b)| f32::from(a) * b).sum();
            assert!((dot(&q, &x) - plain).abs() < 1e-3, "length {len}");
        }
    }
}
