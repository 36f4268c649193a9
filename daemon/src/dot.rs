//! The one hot loop shared by SFace's int8 last layer (`vision::linear_head`) and the
//! gallery's int8 index: a dot product of int8 codes with f32 values.
//!
//! Written so the compiler vectorises it (independent accumulators; float addition is not
//! associative, so a plain `sum()` would stay scalar), and compiled twice on x86-64: for the
//! baseline (SSE2) and for AVX2, picked at run time. On aarch64 NEON is the baseline.

/// `q . x` with 16 independent accumulators (so the compiler vectorises it), in AVX2 where the
/// CPU has it (checked once per call; the check is a cached load).
pub fn dot_i8_f32(q: &[i8], x: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked above).
        return unsafe { dot_i8_f32_avx2(q, x) };
    }
    dot_i8_f32_portable(q, x)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_i8_f32_avx2(q: &[i8], x: &[f32]) -> f32 {
    dot_i8_f32_portable(q, x)
}

#[inline(always)]
fn dot_i8_f32_portable(q: &[i8], x: &[f32]) -> f32 {
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

/// `codes . q` in exact integer arithmetic, for the gallery scan: int8 codes against a query
/// quantised to int16 (its rounding error is 256 times below the codes'). 127 * 32767 * 128
/// fits an i32 with room to spare. AVX2's `vpmaddwd` does 16 products and 8 pairwise sums per
/// instruction; the portable loop is what other CPUs vectorise themselves.
pub fn dot_i8_i16(codes: &[i8], q: &[i16]) -> i32 {
    assert_eq!(codes.len(), q.len(), "dot product of unequal lengths");
    #[cfg(target_arch = "x86_64")]
    if codes.len().is_multiple_of(16) && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU supports AVX2 (checked above); lengths are equal multiples of 16.
        return unsafe { dot_i8_i16_avx2(codes, q) };
    }
    codes
        .iter()
        .zip(q)
        .map(|(&c, &v)| i32::from(c) * i32::from(v))
        .sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_i8_i16_avx2(codes: &[i8], q: &[i16]) -> i32 {
    use std::arch::x86_64::*;
    let mut acc = _mm256_setzero_si256();
    for (c, v) in codes.chunks_exact(16).zip(q.chunks_exact(16)) {
        // 16 int8 -> 16 int16, times 16 int16, adjacent pairs summed into 8 int32.
        let c16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(c.as_ptr().cast()));
        let v16 = _mm256_loadu_si256(v.as_ptr().cast());
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(c16, v16));
    }
    let sum = _mm_add_epi32(
        _mm256_castsi256_si128(acc),
        _mm256_extracti128_si256(acc, 1),
    );
    let sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, 0b01_00_11_10));
    let sum = _mm_add_epi32(sum, _mm_shuffle_epi32(sum, 0b10_11_00_01));
    _mm_cvtsi128_si32(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_dot_is_exact() {
        for len in [0, 16, 128, 130] {
            let c: Vec<i8> = (0..len).map(|i| (i * 53 % 255 - 127) as i8).collect();
            let q: Vec<i16> = (0..len)
                .map(|i| (i * 7919 % 65535 - 32767) as i16)
                .collect();
            let plain: i64 = c
                .iter()
                .zip(&q)
                .map(|(&a, &b)| i64::from(a) * i64::from(b))
                .sum();
            assert_eq!(i64::from(dot_i8_i16(&c, &q)), plain, "length {len}");
        }
        let extremes = dot_i8_i16(&[-127; 128], &[-32767; 128]);
        assert_eq!(i64::from(extremes), 127 * 32767 * 128);
    }

    #[test]
    fn equals_the_plain_sum_for_every_length() {
        for len in [0, 1, 15, 16, 17, 128, 131] {
            let q: Vec<i8> = (0..len).map(|i| (i * 29 % 255 - 127) as i8).collect();
            let x: Vec<f32> = (0..len).map(|i| (i as f32 * 0.7).cos()).collect();
            let plain: f32 = q.iter().zip(&x).map(|(&a, b)| f32::from(a) * b).sum();
            assert!((dot_i8_f32(&q, &x) - plain).abs() < 1e-3, "length {len}");
        }
    }
}
