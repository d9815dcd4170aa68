//! SHA-1 of many independent messages at once ("multi-buffer"): one message per SIMD lane, so the
//! 80 rounds run 16 messages wide with AVX-512 or 8 wide with AVX2. A single SHA-1 cannot be
//! vectorised (every round depends on the previous one), but a batch of pieces can; on x86 CPUs
//! without the SHA extensions this is several times faster per byte than the best single-message
//! code (aws-lc's AVX2 assembly), which is what the store's batched puts and the publisher use.
//!
//! Messages are grouped by length (pieces of a release all have the same length but the last);
//! a group runs its full 64-byte blocks in lockstep, then the padded tail blocks. Groups too small
//! to fill enough lanes, and CPUs without AVX2, go to aws-lc one by one. Every kernel is checked
//! against aws-lc in the tests below.

use aws_lc_rs::digest::{self, SHA1_FOR_LEGACY_USE_ONLY};

const H0: [u32; 5] = [0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476, 0xC3D2_E1F0];
const K: [u32; 4] = [0x5A82_7999, 0x6ED9_EBA1, 0x8F1B_BCDC, 0xCA62_C1D6];

/// The lane kernel a batch of `n` equal-length messages runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    Single,
    #[cfg(target_arch = "x86_64")]
    Avx2x8,
    #[cfg(target_arch = "x86_64")]
    Avx512x16,
}

/// Lanes filled below this count cost more than hashing the messages one by one.
const MIN_LANES: usize = 4;

#[cfg(target_arch = "x86_64")]
fn kernel_for(n: usize) -> Kernel {
    if n >= 9 && std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bw") {
        Kernel::Avx512x16
    } else if n >= MIN_LANES && std::is_x86_feature_detected!("avx2") {
        Kernel::Avx2x8
    } else {
        Kernel::Single
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn kernel_for(_n: usize) -> Kernel {
    Kernel::Single
}

fn single(data: &[u8]) -> [u8; 20] {
    let d = digest::digest(&SHA1_FOR_LEGACY_USE_ONLY, data);
    let mut out = [0u8; 20];
    out.copy_from_slice(d.as_ref());
    out
}

/// SHA-1 of every message, in order.
pub fn sha1_many(msgs: &[&[u8]]) -> Vec<[u8; 20]> {
    let mut out = vec![[0u8; 20]; msgs.len()];
    // Group equal lengths (stable, so the common case of one length keeps its order).
    let mut order: Vec<usize> = (0..msgs.len()).collect();
    order.sort_by_key(|&i| msgs[i].len());
    let mut start = 0;
    while start < order.len() {
        let len = msgs[order[start]].len();
        let mut end = start;
        while end < order.len() && msgs[order[end]].len() == len {
            end += 1;
        }
        let mut group = &order[start..end];
        while !group.is_empty() {
            let kernel = kernel_for(group.len());
            let lanes = match kernel {
                Kernel::Single => 1,
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx2x8 => 8,
                #[cfg(target_arch = "x86_64")]
                Kernel::Avx512x16 => 16,
            };
            let (now, rest) = group.split_at(lanes.min(group.len()));
            run(kernel, msgs, now, &mut out);
            group = rest;
        }
        start = end;
    }
    out
}

fn run(kernel: Kernel, msgs: &[&[u8]], idx: &[usize], out: &mut [[u8; 20]]) {
    match kernel {
        Kernel::Single => {
            for &i in idx {
                out[i] = single(msgs[i]);
            }
        }
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2x8 => {
            let lanes: Vec<&[u8]> = idx.iter().map(|&i| msgs[i]).collect();
            // SAFETY: kernel_for chose this kernel only after detecting AVX2.
            let digests = unsafe { x86::hash_lanes::<8>(&lanes, x86::avx2_compress) };
            for (k, &i) in idx.iter().enumerate() {
                out[i] = digests[k];
            }
        }
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512x16 => {
            let lanes: Vec<&[u8]> = idx.iter().map(|&i| msgs[i]).collect();
            // SAFETY: kernel_for chose this kernel only after detecting AVX-512F.
            let digests = unsafe { x86::hash_lanes::<16>(&lanes, x86::avx512_compress) };
            for (k, &i) in idx.iter().enumerate() {
                out[i] = digests[k];
            }
        }
    }
}

/// The final one or two blocks of a message of `len` bytes whose last `len % 64` bytes are `rest`:
/// the rest, 0x80, zeros and the bit length (big-endian), as SHA-1 pads.
fn tail_blocks(rest: &[u8], len: usize) -> ([u8; 128], usize) {
    let mut t = [0u8; 128];
    t[..rest.len()].copy_from_slice(rest);
    t[rest.len()] = 0x80;
    let blocks = if rest.len() + 9 <= 64 { 1 } else { 2 };
    let bits = (len as u64).wrapping_mul(8);
    t[blocks * 64 - 8..blocks * 64].copy_from_slice(&bits.to_be_bytes());
    (t, blocks)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{tail_blocks, H0, K};

    /// One 64-byte block from each of N lanes (pointers to 64 readable bytes), applied to the
    /// lanes' states (`state[word][lane]`).
    pub type Compress<const N: usize> = unsafe fn(&mut [[u32; N]; 5], &[*const u8; N]);

    /// Hashes 1..=N messages of equal length, one per lane; unused lanes repeat the first
    /// message and are dropped.
    ///
    /// # Safety
    /// `compress` must be supported by the CPU.
    pub unsafe fn hash_lanes<const N: usize>(msgs: &[&[u8]], compress: Compress<N>) -> Vec<[u8; 20]> {
        let n = msgs.len();
        debug_assert!(n >= 1 && n <= N);
        let len = msgs[0].len();
        let mut state = [[0u32; N]; 5];
        for (w, h) in state.iter_mut().zip(H0) {
            *w = [h; N];
        }
        let full = len / 64;
        let lane = |k: usize| msgs[if k < n { k } else { 0 }];
        for b in 0..full {
            let ptrs: [*const u8; N] = std::array::from_fn(|k| lane(k)[b * 64..].as_ptr());
            compress(&mut state, &ptrs);
        }
        let tails: Vec<([u8; 128], usize)> = (0..N).map(|k| tail_blocks(&lane(k)[full * 64..], len)).collect();
        for b in 0..tails[0].1 {
            let ptrs: [*const u8; N] = std::array::from_fn(|k| tails[k].0[b * 64..].as_ptr());
            compress(&mut state, &ptrs);
        }
        (0..n)
            .map(|k| {
                let mut d = [0u8; 20];
                for w in 0..5 {
                    d[w * 4..w * 4 + 4].copy_from_slice(&state[w][k].to_be_bytes());
                }
                d
            })
            .collect()
    }

    /// The 80 rounds of one block on five lane vectors, with `w` holding the block's 16 message
    /// words; `$v` is a macro giving that vector type's operations. Unrolled, so the message
    /// schedule's ring indices are constants and `w` stays in registers.
    // The last rounds' schedule writes are never read again.
    macro_rules! rounds {
        ($v:ident, $w:ident, $a:ident, $b:ident, $c:ident, $d:ident, $e:ident) => {{
            let k = [$v!(splat K[0]), $v!(splat K[1]), $v!(splat K[2]), $v!(splat K[3])];
            macro_rules! round {
                ($t:literal, $f:ident, $s:literal) => {{
                    let wt = if $t < 16 {
                        $w[$t & 15]
                    } else {
                        let x = $v!(rol 1, $v!(xor4 $w[($t + 13) & 15], $w[($t + 8) & 15], $w[($t + 2) & 15], $w[$t & 15]));
                        #[allow(unused_assignments)]
                        {
                            $w[$t & 15] = x;
                        }
                        x
                    };
                    let f = $v!($f $b, $c, $d);
                    let tmp = $v!(add $v!(add $v!(rol 5, $a), f), $v!(add $v!(add $e, k[$s]), wt));
                    $e = $d;
                    $d = $c;
                    $c = $v!(rol 30, $b);
                    $b = $a;
                    $a = tmp;
                }};
            }
            round!(0, ch, 0);
            round!(1, ch, 0);
            round!(2, ch, 0);
            round!(3, ch, 0);
            round!(4, ch, 0);
            round!(5, ch, 0);
            round!(6, ch, 0);
            round!(7, ch, 0);
            round!(8, ch, 0);
            round!(9, ch, 0);
            round!(10, ch, 0);
            round!(11, ch, 0);
            round!(12, ch, 0);
            round!(13, ch, 0);
            round!(14, ch, 0);
            round!(15, ch, 0);
            round!(16, ch, 0);
            round!(17, ch, 0);
            round!(18, ch, 0);
            round!(19, ch, 0);
            round!(20, par, 1);
            round!(21, par, 1);
            round!(22, par, 1);
            round!(23, par, 1);
            round!(24, par, 1);
            round!(25, par, 1);
            round!(26, par, 1);
            round!(27, par, 1);
            round!(28, par, 1);
            round!(29, par, 1);
            round!(30, par, 1);
            round!(31, par, 1);
            round!(32, par, 1);
            round!(33, par, 1);
            round!(34, par, 1);
            round!(35, par, 1);
            round!(36, par, 1);
            round!(37, par, 1);
            round!(38, par, 1);
            round!(39, par, 1);
            round!(40, maj, 2);
            round!(41, maj, 2);
            round!(42, maj, 2);
            round!(43, maj, 2);
            round!(44, maj, 2);
            round!(45, maj, 2);
            round!(46, maj, 2);
            round!(47, maj, 2);
            round!(48, maj, 2);
            round!(49, maj, 2);
            round!(50, maj, 2);
            round!(51, maj, 2);
            round!(52, maj, 2);
            round!(53, maj, 2);
            round!(54, maj, 2);
            round!(55, maj, 2);
            round!(56, maj, 2);
            round!(57, maj, 2);
            round!(58, maj, 2);
            round!(59, maj, 2);
            round!(60, par, 3);
            round!(61, par, 3);
            round!(62, par, 3);
            round!(63, par, 3);
            round!(64, par, 3);
            round!(65, par, 3);
            round!(66, par, 3);
            round!(67, par, 3);
            round!(68, par, 3);
            round!(69, par, 3);
            round!(70, par, 3);
            round!(71, par, 3);
            round!(72, par, 3);
            round!(73, par, 3);
            round!(74, par, 3);
            round!(75, par, 3);
            round!(76, par, 3);
            round!(77, par, 3);
            round!(78, par, 3);
            round!(79, par, 3);
        }};
    }

    // ---------------------------------------------------------------- AVX2, 8 lanes
    macro_rules! v8 {
        (splat $x:expr) => {
            _mm256_set1_epi32($x as i32)
        };
        (add $x:expr, $y:expr) => {
            _mm256_add_epi32($x, $y)
        };
        (rol $n:literal, $x:expr) => {{
            let x = $x;
            _mm256_or_si256(_mm256_slli_epi32::<$n>(x), _mm256_srli_epi32::<{ 32 - $n }>(x))
        }};
        (xor4 $p:expr, $q:expr, $r:expr, $s:expr) => {
            _mm256_xor_si256(_mm256_xor_si256($p, $q), _mm256_xor_si256($r, $s))
        };
        // d ^ (b & (c ^ d))
        (ch $b:expr, $c:expr, $d:expr) => {
            _mm256_xor_si256($d, _mm256_and_si256($b, _mm256_xor_si256($c, $d)))
        };
        (par $b:expr, $c:expr, $d:expr) => {
            _mm256_xor_si256(_mm256_xor_si256($b, $c), $d)
        };
        // (b & c) | (d & (b | c))
        (maj $b:expr, $c:expr, $d:expr) => {
            _mm256_or_si256(_mm256_and_si256($b, $c), _mm256_and_si256($d, _mm256_or_si256($b, $c)))
        };
    }

    /// # Safety
    /// Needs AVX2; every pointer must have 64 readable bytes.
    #[target_feature(enable = "avx2")]
    pub unsafe fn avx2_compress(state: &mut [[u32; 8]; 5], blocks: &[*const u8; 8]) {
        // Rows: lane k's 16 big-endian words, 8 at a time; transposed to words across lanes.
        let bswap = _mm256_setr_epi8(
            3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12, 3, 2, 1, 0, 7, 6, 5, 4, 11, 10, 9, 8, 15, 14, 13, 12,
        );
        let mut w = [_mm256_setzero_si256(); 16];
        for half in 0..2 {
            let r: [__m256i; 8] = std::array::from_fn(|k| {
                _mm256_shuffle_epi8(_mm256_loadu_si256(blocks[k].add(half * 32) as *const __m256i), bswap)
            });
            let t: [__m256i; 8] = std::array::from_fn(|i| {
                let (x, y) = (r[i & !1], r[i | 1]);
                if i & 1 == 0 {
                    _mm256_unpacklo_epi32(x, y)
                } else {
                    _mm256_unpackhi_epi32(x, y)
                }
            });
            // u[4g + m]: in 128-bit half j, word 4j + m of rows 4g..4g+3
            let u: [__m256i; 8] = std::array::from_fn(|i| {
                let (g, m) = (i / 4, i % 4);
                let (x, y) = (t[4 * g + (m >> 1)], t[4 * g + 2 + (m >> 1)]);
                if m & 1 == 0 {
                    _mm256_unpacklo_epi64(x, y)
                } else {
                    _mm256_unpackhi_epi64(x, y)
                }
            });
            for m in 0..4 {
                w[half * 8 + m] = _mm256_permute2x128_si256::<0x20>(u[m], u[4 + m]);
                w[half * 8 + 4 + m] = _mm256_permute2x128_si256::<0x31>(u[m], u[4 + m]);
            }
        }
        let load = |s: &[u32; 8]| _mm256_loadu_si256(s.as_ptr() as *const __m256i);
        let (mut a, mut b, mut c, mut d, mut e) =
            (load(&state[0]), load(&state[1]), load(&state[2]), load(&state[3]), load(&state[4]));
        let saved = [a, b, c, d, e];
        rounds!(v8, w, a, b, c, d, e);
        for (i, v) in [a, b, c, d, e].into_iter().enumerate() {
            _mm256_storeu_si256(state[i].as_mut_ptr() as *mut __m256i, _mm256_add_epi32(v, saved[i]));
        }
    }

    // ---------------------------------------------------------------- AVX-512, 16 lanes
    macro_rules! v16 {
        (splat $x:expr) => {
            _mm512_set1_epi32($x as i32)
        };
        (add $x:expr, $y:expr) => {
            _mm512_add_epi32($x, $y)
        };
        (rol $n:literal, $x:expr) => {
            _mm512_rol_epi32::<$n>($x)
        };
        (xor4 $p:expr, $q:expr, $r:expr, $s:expr) => {
            _mm512_xor_si512(_mm512_ternarylogic_epi32::<0x96>($p, $q, $r), $s)
        };
        // vpternlogd truth tables over (b, c, d): ch 0xCA, parity 0x96, majority 0xE8
        (ch $b:expr, $c:expr, $d:expr) => {
            _mm512_ternarylogic_epi32::<0xCA>($b, $c, $d)
        };
        (par $b:expr, $c:expr, $d:expr) => {
            _mm512_ternarylogic_epi32::<0x96>($b, $c, $d)
        };
        (maj $b:expr, $c:expr, $d:expr) => {
            _mm512_ternarylogic_epi32::<0xE8>($b, $c, $d)
        };
    }

    /// # Safety
    /// Needs AVX-512F (and AVX-512BW for the byte shuffle); every pointer must have 64 readable bytes.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn avx512_compress(state: &mut [[u32; 16]; 5], blocks: &[*const u8; 16]) {
        let bswap = _mm512_set_epi32(
            0x0c0d0e0f, 0x08090a0b, 0x04050607, 0x00010203, 0x0c0d0e0f, 0x08090a0b, 0x04050607, 0x00010203, 0x0c0d0e0f,
            0x08090a0b, 0x04050607, 0x00010203, 0x0c0d0e0f, 0x08090a0b, 0x04050607, 0x00010203,
        );
        let r: [__m512i; 16] =
            std::array::from_fn(|k| _mm512_shuffle_epi8(_mm512_loadu_si512(blocks[k] as *const __m512i), bswap));
        let t: [__m512i; 16] = std::array::from_fn(|i| {
            let (x, y) = (r[i & !1], r[i | 1]);
            if i & 1 == 0 {
                _mm512_unpacklo_epi32(x, y)
            } else {
                _mm512_unpackhi_epi32(x, y)
            }
        });
        // u[4g + m]: in 128-bit lane j, word 4j + m of rows 4g..4g+3
        let u: [__m512i; 16] = std::array::from_fn(|i| {
            let (g, m) = (i / 4, i % 4);
            let (x, y) = (t[4 * g + (m >> 1)], t[4 * g + 2 + (m >> 1)]);
            if m & 1 == 0 {
                _mm512_unpacklo_epi64(x, y)
            } else {
                _mm512_unpackhi_epi64(x, y)
            }
        });
        let mut w = [_mm512_setzero_si512(); 16];
        for m in 0..4 {
            let v0 = _mm512_shuffle_i32x4::<0b01_00_01_00>(u[m], u[4 + m]);
            let v1 = _mm512_shuffle_i32x4::<0b11_10_11_10>(u[m], u[4 + m]);
            let v2 = _mm512_shuffle_i32x4::<0b01_00_01_00>(u[8 + m], u[12 + m]);
            let v3 = _mm512_shuffle_i32x4::<0b11_10_11_10>(u[8 + m], u[12 + m]);
            w[m] = _mm512_shuffle_i32x4::<0b10_00_10_00>(v0, v2);
            w[4 + m] = _mm512_shuffle_i32x4::<0b11_01_11_01>(v0, v2);
            w[8 + m] = _mm512_shuffle_i32x4::<0b10_00_10_00>(v1, v3);
            w[12 + m] = _mm512_shuffle_i32x4::<0b11_01_11_01>(v1, v3);
        }
        let load = |s: &[u32; 16]| _mm512_loadu_si512(s.as_ptr() as *const __m512i);
        let (mut a, mut b, mut c, mut d, mut e) =
            (load(&state[0]), load(&state[1]), load(&state[2]), load(&state[3]), load(&state[4]));
        let saved = [a, b, c, d, e];
        rounds!(v16, w, a, b, c, d, e);
        for (i, v) in [a, b, c, d, e].into_iter().enumerate() {
            _mm512_storeu_si512(state[i].as_mut_ptr() as *mut __m512i, _mm512_add_epi32(v, saved[i]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(seed: u64, len: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn check(msgs: &[Vec<u8>]) {
        let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
        let got = sha1_many(&refs);
        for (i, m) in msgs.iter().enumerate() {
            assert_eq!(got[i], single(m), "message {i} of {} ({} bytes)", msgs.len(), m.len());
        }
    }

    #[test]
    fn known_answer() {
        // FIPS 180 "abc", through every lane count
        for n in 1..=17 {
            let msgs = vec![b"abc".to_vec(); n];
            let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
            for d in sha1_many(&refs) {
                assert_eq!(hex::encode(d), "a9993e364706816aba3e25717850c26c9cd0d89d");
            }
        }
    }

    #[test]
    fn every_padding_edge_and_lane_count_matches_aws_lc() {
        for len in [0, 1, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 1000, 16384, 16384 + 7] {
            for n in [1, 2, 3, 5, 8, 9, 13, 16, 17, 33] {
                let msgs: Vec<Vec<u8>> = (0..n).map(|i| msg((len * 100 + i) as u64, len)).collect();
                check(&msgs);
            }
        }
    }

    #[test]
    fn mixed_lengths_keep_their_order() {
        let lens = [
            1 << 20,
            1 << 20,
            777,
            1 << 20,
            0,
            64,
            1 << 20,
            777,
            1 << 20,
            1 << 20,
            1 << 20,
            1 << 20,
            1 << 20,
            1 << 20,
            1 << 20,
        ];
        let msgs: Vec<Vec<u8>> = lens.iter().enumerate().map(|(i, &l)| msg(i as u64 + 7, l)).collect();
        check(&msgs);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn each_kernel_directly() {
        let msgs: Vec<Vec<u8>> = (0..16).map(|i| msg(i, 4096 + 3)).collect();
        let refs: Vec<&[u8]> = msgs.iter().map(Vec::as_slice).collect();
        if std::is_x86_feature_detected!("avx2") {
            for n in 1..=8 {
                let got = unsafe { x86::hash_lanes::<8>(&refs[..n], x86::avx2_compress) };
                for k in 0..n {
                    assert_eq!(got[k], single(refs[k]), "avx2 lane {k} of {n}");
                }
            }
        } else {
            eprintln!("no AVX2 here: the 8-lane kernel is not tested on this CPU");
        }
        if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bw") {
            for n in 1..=16 {
                let got = unsafe { x86::hash_lanes::<16>(&refs[..n], x86::avx512_compress) };
                for k in 0..n {
                    assert_eq!(got[k], single(refs[k]), "avx512 lane {k} of {n}");
                }
            }
        } else {
            eprintln!("no AVX-512 here: the 16-lane kernel is not tested on this CPU");
        }
    }
}
