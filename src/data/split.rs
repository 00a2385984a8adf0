//! The seeded validation split, and the ChaCha streams every random draw of the data pipeline
//! comes from: keyed by (seed, purpose, epoch, index), never by thread timing, so batches are
//! identical for a seed whatever the number of workers.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

/// What a random stream is used for; part of every derived seed so streams never overlap.
#[derive(Clone, Copy)]
pub(crate) enum Stream {
    Split = 1,
    Shuffle = 2,
    Sample = 3,
}

/// A ChaCha RNG keyed by (seed, stream, a, b): independent of threads and call order.
pub(crate) fn rng_for(seed: u64, stream: Stream, a: u64, b: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    for (i, v) in [seed, stream as u64, a, b].into_iter().enumerate() {
        key[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
    }
    ChaCha8Rng::from_seed(key)
}

/// Indices into the pair list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub train: Vec<usize>,
    pub val: Vec<usize>,
}

/// Seeded split stratified by kind: each kind gives `round(n * val_fraction)` of its `n` pairs
/// to validation, at least one when `val_fraction > 0` and `n >= 2`, and never all of them.
/// Both lists come back sorted.
pub fn split(kinds: &[&str], val_fraction: f64, seed: u64) -> Split {
    let mut by_kind: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, k) in kinds.iter().enumerate() {
        by_kind.entry(k).or_default().push(i);
    }
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for (k, (_, mut members)) in by_kind.into_iter().enumerate() {
        let n = members.len();
        let n_val = if val_fraction > 0.0 && n >= 2 {
            ((n as f64 * val_fraction).round() as usize).clamp(1, n - 1)
        } else {
            0
        };
        members.shuffle(&mut rng_for(seed, Stream::Split, k as u64, 0));
        val.extend_from_slice(&members[..n_val]);
        train.extend_from_slice(&members[n_val..]);
    }
    train.sort_unstable();
    val.sort_unstable();
    Split { train, val }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_streams_differ() {
        use rand::RngCore;
        let a = rng_for(1, Stream::Sample, 0, 5).next_u64();
        assert_eq!(a, rng_for(1, Stream::Sample, 0, 5).next_u64());
        for other in [
            rng_for(2, Stream::Sample, 0, 5),
            rng_for(1, Stream::Shuffle, 0, 5),
            rng_for(1, Stream::Sample, 1, 5),
            rng_for(1, Stream::Sample, 0, 6),
        ] {
            assert_ne!(a, { other }.next_u64());
        }
    }
}
