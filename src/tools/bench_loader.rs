//! `promptir bench-loader`: the training loader alone. Its consumer sleeps `step_ms` per batch in
//! place of a training step, so the time it still waits for data is what a step of that length
//! would lose (issue: loader wait < 10% of a GPU-sized step at batch 8, patch 128).

use crate::config::Experiment;
use crate::data::{Loader, LoaderConfig, Sample, Store};
use crate::{Error, Result};
use rand::{RngCore, SeedableRng};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One measured setting.
#[derive(Debug, Clone, Serialize)]
pub struct LoaderRow {
    pub batch: usize,
    pub patch: usize,
    /// Side of the square in-memory pairs batches are cut from.
    pub image: usize,
    pub pairs: usize,
    pub workers: usize,
    pub prefetch: usize,
    /// The simulated step per batch (0: the loader's own rate).
    pub step_ms: f64,
    pub batches: usize,
    /// Mean time the consumer's `next()` took: waiting for a worker's batch.
    pub wait_ms_mean: f64,
    pub wait_ms_max: f64,
    /// Waiting time over wall time.
    pub wait_fraction: f64,
    pub batches_per_s: f64,
}

/// `pairs` random `image`-sized pairs: crops, flips, rotations and blurs cost the same whatever
/// the pixels are, so no files are needed.
fn random_store(pairs: usize, image: usize) -> Store {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let samples = (0..pairs)
        .map(|i| {
            let kind = if i % 2 == 0 { "rain" } else { "snow" };
            let mut degraded = vec![0u8; image * image * 3];
            let mut clean = vec![0u8; image * image * 3];
            rng.fill_bytes(&mut degraded);
            rng.fill_bytes(&mut clean);
            Sample {
                name: format!("{kind}-{i}.png"),
                kind: kind.to_string(),
                path: PathBuf::from(format!("{kind}-{i}.png")),
                height: image,
                width: image,
                degraded,
                clean,
            }
        })
        .collect();
    Store::from_samples(samples)
}

/// Runs `batches` batches of `exp`'s loader (its `augment`, `data.workers`, `data.prefetch`,
/// `seed`; batch and patch as given) over `pairs` random pairs, epoch after epoch as training
/// does, sleeping `step` after each batch.
pub fn run(
    exp: &Experiment,
    batch: usize,
    patch: usize,
    image: usize,
    pairs: usize,
    step: Duration,
    batches: usize,
) -> Result<LoaderRow> {
    if batches == 0 {
        return Err(Error::Usage("--batches must be >= 1".into()));
    }
    let cfg =
        LoaderConfig { batch_size: batch, patch_size: patch, ..LoaderConfig::from_experiment(exp) };
    let (workers, prefetch) = (cfg.workers, cfg.prefetch);
    let store = Arc::new(random_store(pairs, image));
    let loader = Loader::new(store, (0..pairs).collect(), cfg)?;
    let (mut waits, mut epoch) = (Vec::with_capacity(batches), 0);
    let t0 = Instant::now();
    'outer: loop {
        for b in loader.epoch(epoch) {
            waits.push(b.wait.as_secs_f64() * 1e3);
            std::thread::sleep(step);
            if waits.len() == batches {
                break 'outer;
            }
        }
        epoch += 1;
    }
    let wall_ms = t0.elapsed().as_secs_f64() * 1e3;
    let total: f64 = waits.iter().sum();
    Ok(LoaderRow {
        batch,
        patch,
        image,
        pairs,
        workers,
        prefetch,
        step_ms: step.as_secs_f64() * 1e3,
        batches,
        wait_ms_mean: total / batches as f64,
        wait_ms_max: waits.iter().cloned().fold(0.0, f64::max),
        wait_fraction: total / wall_ms,
        batches_per_s: batches as f64 / (wall_ms / 1e3),
    })
}

/// The table `promptir bench-loader` prints without `--json`.
pub fn format_table(rows: &[LoaderRow]) -> String {
    let mut out = format!(
        "{:>5} {:>5} {:>7} {:>7} {:>8} {:>9} {:>9} {:>6} {:>9}\n",
        "batch", "patch", "workers", "step ms", "batches", "wait ms", "max ms", "wait", "batch/s"
    );
    for r in rows {
        out.push_str(&format!(
            "{:>5} {:>5} {:>7} {:>7.0} {:>8} {:>9.2} {:>9.2} {:>5.1}% {:>9.1}\n",
            r.batch,
            r.patch,
            r.workers,
            r.step_ms,
            r.batches,
            r.wait_ms_mean,
            r.wait_ms_max,
            r.wait_fraction * 100.0,
            r.batches_per_s
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_step_hides_the_loader_and_a_zero_step_exposes_it() {
        let exp = Experiment::default();
        let fast = run(&exp, 4, 32, 64, 64, Duration::ZERO, 32).unwrap();
        assert_eq!((fast.batches, fast.workers), (32, exp.data.workers));
        // With no step the consumer does little but wait (the rest of its time is starting
        // each epoch's workers, which other tests running in parallel slow down).
        assert!(fast.wait_fraction > 0.3, "{fast:?}");
        // A 20 ms step is far longer than cutting 4 crops of 32x32: prefetching hides it all
        // but the first batch of each epoch (4 batches of 4 from 16 pairs).
        let slow = run(&exp, 4, 32, 64, 16, Duration::from_millis(20), 12).unwrap();
        assert!(slow.wait_fraction < 0.1, "{slow:?}");
        assert!(slow.batches_per_s <= 50.0, "a 20 ms step caps the rate at 50/s: {slow:?}");
        assert!(run(&exp, 4, 32, 64, 16, Duration::ZERO, 0).is_err());
    }
}
