//! The background batch loader: shuffled, augmented patch batches built on worker threads, in
//! an order that depends only on (seed, epoch).

use super::augment::Params;
use super::split::{rng_for, Stream};
use super::store::Store;
use crate::config::{AugmentConfig, Experiment};
use crate::{Error, Result};
use rand::seq::SliceRandom;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tch::Tensor;

/// How a [`Loader`] cuts batches.
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderConfig {
    /// The experiment key its sizes come from (`train`, or `train.stages[i]`), for messages.
    pub key: String,
    pub batch_size: usize,
    pub patch_size: usize,
    pub augment: AugmentConfig,
    pub seed: u64,
    /// Background threads preparing batches.
    pub workers: usize,
    /// Ready batches kept ahead of the consumer (rounded up to a multiple of `workers`).
    pub prefetch: usize,
    /// Data-parallel training: this process's rank of `world`. Every rank shuffles the same
    /// order; global batch `b` is the `world * batch_size` pairs from `b * world * batch_size`,
    /// and rank `r` takes its `r`-th slice of `batch_size`, so the ranks never overlap and
    /// together see what one process with the global batch would.
    pub rank: usize,
    pub world: usize,
}

impl LoaderConfig {
    /// The training loader of an experiment (`train.*`, `augment`, `seed`, `data.*`).
    pub fn from_experiment(e: &Experiment) -> Self {
        LoaderConfig {
            key: "train".into(),
            batch_size: e.train.batch_size,
            patch_size: e.train.patch_size,
            augment: e.augment.clone(),
            seed: e.seed,
            workers: e.data.workers,
            prefetch: e.data.prefetch,
            rank: 0,
            world: 1,
        }
    }
}

/// A training batch: CPU tensors of shape (B, 3, P, P), f32 in [0, 1].
#[derive(Debug)]
pub struct Batch {
    pub degraded: Tensor,
    pub clean: Tensor,
    pub kinds: Vec<String>,
    /// Store indices of the samples.
    pub indices: Vec<usize>,
    /// How long the consumer's `next()` took, i.e. waited for the worker that made the batch.
    pub wait: Duration,
}

/// Produces shuffled, augmented patch batches for a fixed set of store indices.
#[derive(Debug, Clone)]
pub struct Loader {
    store: Arc<Store>,
    indices: Arc<Vec<usize>>,
    cfg: Arc<LoaderConfig>,
}

impl Loader {
    /// Checks that there is at least one batch and that every image fits the patch.
    pub fn new(store: Arc<Store>, indices: Vec<usize>, cfg: LoaderConfig) -> Result<Self> {
        let p = cfg.patch_size;
        if p == 0 || cfg.batch_size == 0 {
            let k = &cfg.key;
            return Err(Error::Usage(format!("{k}.patch_size and {k}.batch_size must be >= 1")));
        }
        let global = cfg.batch_size * cfg.world.max(1);
        if indices.len() < global {
            let procs = match cfg.world {
                0 | 1 => String::new(),
                n => format!(" x {n} processes = a global batch of {global}"),
            };
            return Err(Error::Usage(format!(
                "{} training pairs but {k}.batch_size is {}{procs}; lower {k}.batch_size or add pairs",
                indices.len(),
                cfg.batch_size,
                k = cfg.key
            )));
        }
        for &i in &indices {
            let s = store.get(i);
            if s.height < p || s.width < p {
                return Err(Error::data(
                    &s.path,
                    format!(
                        "image is {}x{}, smaller than {k}.patch_size {p}; lower {k}.patch_size or remove the pair",
                        s.width,
                        s.height,
                        k = cfg.key
                    ),
                ));
            }
        }
        Ok(Loader { store, indices: Arc::new(indices), cfg: Arc::new(cfg) })
    }

    /// Full (global) batches per epoch; the last incomplete one is dropped.
    pub fn batches_per_epoch(&self) -> usize {
        self.indices.len() / (self.cfg.batch_size * self.cfg.world.max(1))
    }

    /// The training pairs the epochs go over.
    pub fn pairs(&self) -> usize {
        self.indices.len()
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.cfg
    }

    /// Starts the epoch's workers. Worker `w` prepares batches `w, w + W, ...` in order into its
    /// own bounded channel and the iterator reads them round-robin, so batches arrive in a
    /// fixed order with at most `prefetch` (rounded up to a multiple of W) ready ahead.
    /// Dropping the iterator early stops the workers.
    pub fn epoch(&self, epoch: usize) -> EpochBatches {
        self.epoch_from(epoch, 0)
    }

    /// The epoch's batches from batch `first` on, the same as [`Self::epoch`]'s from there: a
    /// batch depends only on (seed, epoch, its index), so a resumed run builds none of the
    /// batches it already took.
    pub fn epoch_from(&self, epoch: usize, first: usize) -> EpochBatches {
        let cfg = &self.cfg;
        let mut order = (*self.indices).clone();
        order.shuffle(&mut rng_for(cfg.seed, Stream::Shuffle, epoch as u64, 0));
        let order = Arc::new(order);
        let total = self.batches_per_epoch();
        let first = first.min(total);
        let workers = cfg.workers.clamp(1, (total - first).max(1));
        let depth = cfg.prefetch.div_ceil(workers).max(1);
        let mut receivers = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for w in 0..workers {
            let (tx, rx) = sync_channel::<RawBatch>(depth);
            let (store, cfg, order) = (self.store.clone(), self.cfg.clone(), order.clone());
            let handle = std::thread::Builder::new()
                .name(format!("loader-{w}"))
                .spawn(move || {
                    for b in (first + w..total).step_by(workers) {
                        let at = (b * cfg.world.max(1) + cfg.rank) * cfg.batch_size;
                        let ids = &order[at..at + cfg.batch_size];
                        if tx.send(make_batch(&store, &cfg, ids, epoch)).is_err() {
                            return; // the consumer stopped early
                        }
                    }
                })
                .expect("spawn loader thread");
            receivers.push(rx);
            handles.push(Some(handle));
        }
        EpochBatches { receivers, handles, first, next: first, total, store: self.store.clone() }
    }
}

/// A batch built on a worker, tensors included: copying ~3 MB into two new tensors took
/// 3-10 ms per batch of 8 x 128^2 when the consumer did it (`promptir bench-loader`), time a
/// training step would spend waiting.
struct RawBatch {
    indices: Vec<usize>,
    degraded: Tensor,
    clean: Tensor,
}

fn make_batch(store: &Store, cfg: &LoaderConfig, ids: &[usize], epoch: usize) -> RawBatch {
    let p = cfg.patch_size;
    let n = ids.len() * 3 * p * p;
    let (mut degraded, mut clean) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for &i in ids {
        let s = store.get(i);
        let mut rng = rng_for(cfg.seed, Stream::Sample, epoch as u64, i as u64);
        let params = Params::sample(&cfg.augment, s.height, s.width, p, &mut rng);
        let (d, c) = params.apply(&s.degraded, &s.clean, s.height, s.width, p);
        degraded.extend_from_slice(&d.data);
        clean.extend_from_slice(&c.data);
    }
    let shape = [ids.len() as i64, 3, p as i64, p as i64];
    RawBatch {
        indices: ids.to_vec(),
        degraded: Tensor::from_slice(&degraded).view(shape),
        clean: Tensor::from_slice(&clean).view(shape),
    }
}

/// The batches of one epoch, in order; see [`Loader::epoch`].
pub struct EpochBatches {
    receivers: Vec<Receiver<RawBatch>>,
    handles: Vec<Option<JoinHandle<()>>>,
    /// The first batch (worker 0 builds it).
    first: usize,
    next: usize,
    total: usize,
    store: Arc<Store>,
}

impl Iterator for EpochBatches {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.next >= self.total {
            return None;
        }
        let start = Instant::now();
        let w = (self.next - self.first) % self.receivers.len();
        let raw = match self.receivers[w].recv() {
            Ok(raw) => raw,
            Err(_) => {
                // The worker is gone before its last batch: it panicked; surface that panic.
                let handle = self.handles[w].take().expect("worker joined once");
                match handle.join() {
                    Err(panic) => std::panic::resume_unwind(panic),
                    Ok(()) => panic!("loader worker {w} stopped before batch {}", self.next),
                }
            }
        };
        self.next += 1;
        let kinds = raw.indices.iter().map(|&i| self.store.get(i).kind.clone()).collect();
        let RawBatch { indices, degraded, clean } = raw;
        Some(Batch { degraded, clean, kinds, indices, wait: start.elapsed() })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.total - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for EpochBatches {}

impl Drop for EpochBatches {
    fn drop(&mut self) {
        // Closing the channels makes blocked or finishing workers return; then reap them.
        self.receivers.clear();
        for h in self.handles.iter_mut().filter_map(Option::take) {
            let _ = h.join();
        }
    }
}
