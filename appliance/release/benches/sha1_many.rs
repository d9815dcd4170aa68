//! Piece hashing throughput: `sha1_many` (multi-buffer SIMD lanes) against aws-lc's
//! single-message SHA-1 on the same pieces, in the same run; prints MiB/s for both and the ratio
//! per batch size. Env: POPSEED_BENCH_MIB (default 256), POPSEED_BENCH_PIECE (default 1MiB).
//!
//!   cargo bench -p popseed-release --bench sha1_many

use std::time::Instant;

use popseed_release::hashing::piece_hash;
use popseed_release::sha1_many::sha1_many;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let env = |k: &str, d: &str| std::env::var(k).unwrap_or_else(|_| d.into());
    let total: usize = env("POPSEED_BENCH_MIB", "256").parse::<usize>().expect("POPSEED_BENCH_MIB") << 20;
    let piece: usize = env("POPSEED_BENCH_PIECE", "1048576").parse().expect("POPSEED_BENCH_PIECE");
    let n = (total / piece).max(1);
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let pieces: Vec<Vec<u8>> = (0..n)
        .map(|_| {
            (0..piece)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect()
        })
        .collect();
    let mib = (n * piece) as f64 / (1 << 20) as f64;
    let t = Instant::now();
    let reference: Vec<[u8; 20]> = pieces.iter().map(|p| piece_hash(p)).collect();
    let single = mib / t.elapsed().as_secs_f64();
    println!("sha1 bench: {n} pieces of {} KiB", piece / 1024);
    println!("  aws-lc, one piece at a time     {single:8.1} MiB/s");
    for batch in [2, 4, 8, 16] {
        let t = Instant::now();
        let mut got = Vec::with_capacity(n);
        for chunk in pieces.chunks(batch) {
            let refs: Vec<&[u8]> = chunk.iter().map(Vec::as_slice).collect();
            got.extend(sha1_many(&refs));
        }
        let many = mib / t.elapsed().as_secs_f64();
        assert_eq!(got, reference, "sha1_many disagrees with aws-lc");
        println!("  sha1_many, batches of {batch:2}       {many:8.1} MiB/s   ratio {:.2}", many / single);
    }
}
