//! The HW4 dataset: finding and checking pairs, the in-memory store, the validation split and
//! the background batch loader.
//!
//! Layout (course release):
//! ```text
//! ROOT/train/degraded/<type>-<N>.png     paired by name with
//! ROOT/train/clean/<type>_clean-<N>.png  (<type> is [a-z]+, e.g. rain, snow; png/jpg/jpeg)
//! ROOT/test/degraded/<K>.png             no ground truth, except in synthetic sets that also
//! ROOT/test/clean/<K>.png                have same-named targets for scoring
//! ```
//! Every check that can fail on user data runs before training: [`scan_pairs`] (names, twins,
//! folders), [`Store::load`] (decoding, pair sizes), [`Loader::new`] (patch size).
//!
//! Images are stored decoded as **HWC u8** (the file layout, 1.26 GB for the 3,200 HW4 pairs),
//! converted to CHW f32 only per training patch on loader threads ([`crate::augment`]).
//! Randomness is derived from (seed, purpose, epoch, index) with ChaCha, never from thread
//! timing, so batches are identical for a seed whatever the number of workers.

use crate::augment::Params;
use crate::config::{AugmentConfig, Experiment};
use crate::io::{is_image_path, list_images, RgbImage};
use crate::{Error, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tch::Tensor;

/// One training pair found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairPath {
    /// The degraded file name, e.g. `rain-12.png`.
    pub name: String,
    /// Degradation type, the name's prefix (`rain`, `snow`, ...).
    pub kind: String,
    pub degraded: PathBuf,
    pub clean: PathBuf,
}

/// One test image; `clean` only in synthetic sets that ship targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestPath {
    /// The file name, e.g. `7.png` (the `pred.npz` key).
    pub name: String,
    pub degraded: PathBuf,
    pub clean: Option<PathBuf>,
}

/// `<kind><sep><digits>.<png|jpg|jpeg>` split into (kind, digits); `sep` is `-` or `_clean-`.
fn parse_name(file: &str, sep: &str) -> Option<(String, String)> {
    let (stem, ext) = file.rsplit_once('.')?;
    if !matches!(ext.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg") {
        return None;
    }
    let (kind, num) = stem.rsplit_once('-')?;
    let kind = kind.strip_suffix(sep.trim_end_matches('-'))?;
    let ok = !kind.is_empty()
        && kind.bytes().all(|b| b.is_ascii_lowercase())
        && !num.is_empty()
        && num.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| (kind.to_string(), num.to_string()))
}

/// Regular, non-hidden files directly in `dir` (hidden ones such as `.DS_Store` are skipped).
fn files_in(dir: &Path, what: &str) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Err(Error::data(
            dir,
            format!("missing folder; {what} (check data.root points at the dataset root)"),
        ));
    }
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut files = Vec::new();
    for entry in rd {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let hidden = path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if !hidden && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// ` (and N more)` when a problem repeats.
fn more(n: usize) -> String {
    if n > 1 {
        format!(" (and {} more like it)", n - 1)
    } else {
        String::new()
    }
}

/// Key (kind, number as written) -> path; errors on bad names and duplicates.
fn index_folder(
    dir: &Path,
    sep: &str,
    example: &str,
) -> Result<BTreeMap<(String, String), PathBuf>> {
    let files = files_in(dir, &format!("expected files named like {example}"))?;
    if files.is_empty() {
        return Err(Error::data(
            dir,
            format!("no images in this folder; expected files named like {example}"),
        ));
    }
    let mut map = BTreeMap::new();
    let mut bad = Vec::new();
    for f in files {
        match parse_name(&file_name(&f), sep) {
            Some(key) => {
                if let Some(old) = map.insert(key, f.clone()) {
                    return Err(Error::data(
                        &f,
                        format!(
                            "same pair number as {}; keep only one of the two",
                            file_name(&old)
                        ),
                    ));
                }
            }
            None => bad.push(f),
        }
    }
    if let Some(first) = bad.first() {
        return Err(Error::data(
            first,
            format!(
                "unexpected file name{}; files here must be named like {example} \
                 (type in lowercase letters, png or jpg); rename or move it",
                more(bad.len())
            ),
        ));
    }
    Ok(map)
}

/// Finds the training pairs under `root`, matched by name (never by sort order), sorted by
/// type and then numerically. Fails on a missing or empty folder, an unexpected file name,
/// a duplicate number, or an image without its twin.
pub fn scan_pairs(root: &Path) -> Result<Vec<PairPath>> {
    if !root.is_dir() {
        return Err(Error::data(
            root,
            "dataset folder does not exist; give --data DIR or set data.root to the folder holding train/",
        ));
    }
    let ddir = root.join("train").join("degraded");
    let cdir = root.join("train").join("clean");
    let degraded = index_folder(&ddir, "-", "rain-1.png")?;
    let clean = index_folder(&cdir, "_clean-", "rain_clean-1.png")?;
    let lonely: Vec<_> = degraded.iter().filter(|(k, _)| !clean.contains_key(*k)).collect();
    if let Some(((kind, num), path)) = lonely.first() {
        return Err(Error::data(
            path,
            format!(
                "has no clean twin (expected {}){}; add the clean image or remove the degraded one",
                cdir.join(format!("{kind}_clean-{num}.png")).display(),
                more(lonely.len())
            ),
        ));
    }
    let orphans: Vec<_> = clean.iter().filter(|(k, _)| !degraded.contains_key(*k)).collect();
    if let Some(((kind, num), path)) = orphans.first() {
        return Err(Error::data(
            path,
            format!(
                "has no degraded twin (expected {}){}; add the degraded image or remove the clean one",
                ddir.join(format!("{kind}-{num}.png")).display(),
                more(orphans.len())
            ),
        ));
    }
    let mut pairs: Vec<(String, PairPath)> = degraded
        .into_iter()
        .map(|(key, d)| {
            let clean = clean[&key].clone();
            let pair = PairPath { name: file_name(&d), kind: key.0, clean, degraded: d };
            (key.1, pair)
        })
        .collect();
    // Numeric order within a type: compare digit strings without leading zeros by length.
    pairs.sort_by(|(a, pa), (b, pb)| {
        let num = |s: &str| {
            let t = s.trim_start_matches('0');
            (t.len(), t.to_string(), s.len())
        };
        (&pa.kind, num(a)).cmp(&(&pb.kind, num(b)))
    });
    let pairs: Vec<PairPath> = pairs.into_iter().map(|(_, p)| p).collect();
    Ok(pairs)
}

/// Finds the test images under `root/test/degraded` (sorted numerically) and, if the folder
/// `root/test/clean` exists, their same-named targets (each must have one).
pub fn scan_test(root: &Path) -> Result<Vec<TestPath>> {
    let ddir = root.join("test").join("degraded");
    let non_images = |dir: &Path| -> Result<()> {
        let bad: Vec<PathBuf> = files_in(dir, "expected test images")?
            .into_iter()
            .filter(|p| !is_image_path(p))
            .collect();
        match bad.first() {
            Some(f) => Err(Error::data(
                f,
                format!(
                    "not an image file name{} (png or jpg expected); move it out",
                    more(bad.len())
                ),
            )),
            None => Ok(()),
        }
    };
    non_images(&ddir)?;
    let images = list_images(&ddir)?;
    if images.is_empty() {
        return Err(Error::data(
            &ddir,
            "no images in this folder; expected test images like 0.png",
        ));
    }
    let cdir = root.join("test").join("clean");
    let clean: Option<BTreeMap<String, PathBuf>> = if cdir.is_dir() {
        non_images(&cdir)?;
        Some(list_images(&cdir)?.into_iter().map(|p| (file_name(&p), p)).collect())
    } else {
        None
    };
    let tests: Vec<TestPath> = images
        .into_iter()
        .map(|d| TestPath {
            name: file_name(&d),
            clean: clean.as_ref().and_then(|c| c.get(&file_name(&d)).cloned()),
            degraded: d,
        })
        .collect();
    if let Some(clean) = &clean {
        if let Some(t) = tests.iter().find(|t| t.clean.is_none()) {
            return Err(Error::data(
                &t.degraded,
                format!(
                    "no target {}; test/clean must hold one per test image",
                    cdir.join(&t.name).display()
                ),
            ));
        }
        if let Some((name, path)) = clean.iter().find(|(n, _)| !tests.iter().any(|t| &&t.name == n))
        {
            return Err(Error::data(
                path,
                format!("no test image {}; remove the stray target", ddir.join(name).display()),
            ));
        }
    }
    Ok(tests)
}

/// What a random stream is used for; part of every derived seed so streams never overlap.
#[derive(Clone, Copy)]
enum Stream {
    Split = 1,
    Shuffle = 2,
    Sample = 3,
}

/// A ChaCha RNG keyed by (seed, stream, a, b): independent of threads and call order.
fn rng_for(seed: u64, stream: Stream, a: u64, b: u64) -> ChaCha8Rng {
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

/// One decoded pair, both images HWC u8 of the same size.
#[derive(Debug, Clone)]
pub struct Sample {
    /// The degraded file name, e.g. `rain-12.png`.
    pub name: String,
    pub kind: String,
    pub path: PathBuf,
    pub height: usize,
    pub width: usize,
    pub degraded: Vec<u8>,
    pub clean: Vec<u8>,
}

/// A full validation image pair as (1, 3, H, W) f32 tensors in [0, 1] on the CPU.
#[derive(Debug)]
pub struct ValImage {
    pub name: String,
    pub kind: String,
    pub degraded: Tensor,
    pub clean: Tensor,
}

fn hwc_to_tensor(hwc: &[u8], h: usize, w: usize) -> Tensor {
    RgbImage { width: w, height: h, hwc: hwc.to_vec() }.to_tensor().unsqueeze(0)
}

/// All pairs decoded into memory, in the order of the [`PairPath`] list they came from.
#[derive(Debug)]
pub struct Store {
    samples: Vec<Sample>,
}

impl Store {
    /// Decodes every pair on a local pool of `workers` threads (not rayon's global pool, which
    /// would compete with libtorch's threads), with a progress bar on a terminal. Fails on the
    /// first unreadable image or size mismatch in list order.
    pub fn load(pairs: &[PairPath], workers: usize) -> Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(workers.max(1))
            .thread_name(|i| format!("decode-{i}"))
            .build()
            .map_err(|e| Error::Usage(format!("cannot start {workers} decode threads: {e}")))?;
        let bar = ProgressBar::new(pairs.len() as u64);
        if std::io::stderr().is_terminal() {
            bar.set_style(
                ProgressStyle::with_template("decoding pairs {bar:30} {pos}/{len} [{elapsed}]")
                    .expect("valid template"),
            );
        } else {
            bar.set_draw_target(ProgressDrawTarget::hidden());
        }
        let results: Vec<Result<Sample>> = pool.install(|| {
            pairs
                .par_iter()
                .map(|p| {
                    let s = load_pair(p);
                    bar.inc(1);
                    s
                })
                .collect()
        });
        bar.finish_and_clear();
        Ok(Store { samples: results.into_iter().collect::<Result<_>>()? })
    }

    /// A store from already decoded samples (tests, synthetic data).
    pub fn from_samples(samples: Vec<Sample>) -> Self {
        Store { samples }
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    pub fn get(&self, i: usize) -> &Sample {
        &self.samples[i]
    }

    pub fn samples(&self) -> &[Sample] {
        &self.samples
    }

    /// The decoded samples, without copying them.
    pub fn into_samples(self) -> Vec<Sample> {
        self.samples
    }

    /// Each sample's kind, in order (the input of [`split`]).
    pub fn kinds(&self) -> Vec<&str> {
        self.samples.iter().map(|s| s.kind.as_str()).collect()
    }

    /// Pair `i` as full-size tensors (validation uses whole images, never crops).
    pub fn val_image(&self, i: usize) -> ValImage {
        let s = &self.samples[i];
        ValImage {
            name: s.name.clone(),
            kind: s.kind.clone(),
            degraded: hwc_to_tensor(&s.degraded, s.height, s.width),
            clean: hwc_to_tensor(&s.clean, s.height, s.width),
        }
    }
}

fn load_pair(p: &PairPath) -> Result<Sample> {
    let d = RgbImage::load(&p.degraded)?;
    let c = RgbImage::load(&p.clean)?;
    if (d.width, d.height) != (c.width, c.height) {
        return Err(Error::data(
            &p.clean,
            format!(
                "is {}x{} but its degraded twin {} is {}x{}; a pair must have one size, re-export one of them",
                c.width, c.height, p.name, d.width, d.height
            ),
        ));
    }
    Ok(Sample {
        name: p.name.clone(),
        kind: p.kind.clone(),
        path: p.degraded.clone(),
        height: d.height,
        width: d.width,
        degraded: d.hwc,
        clean: c.hwc,
    })
}

/// How a [`Loader`] cuts batches.
#[derive(Debug, Clone, PartialEq)]
pub struct LoaderConfig {
    pub batch_size: usize,
    pub patch_size: usize,
    pub augment: AugmentConfig,
    pub seed: u64,
    /// Background threads preparing batches.
    pub workers: usize,
    /// Ready batches kept ahead of the consumer (rounded up to a multiple of `workers`).
    pub prefetch: usize,
}

impl LoaderConfig {
    /// The training loader of an experiment (`train.*`, `augment`, `seed`, `data.*`).
    pub fn from_experiment(e: &Experiment) -> Self {
        LoaderConfig {
            batch_size: e.train.batch_size,
            patch_size: e.train.patch_size,
            augment: e.augment.clone(),
            seed: e.seed,
            workers: e.data.workers,
            prefetch: e.data.prefetch,
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
            return Err(Error::Usage("train.patch_size and train.batch_size must be >= 1".into()));
        }
        if indices.len() < cfg.batch_size {
            return Err(Error::Usage(format!(
                "{} training pairs but train.batch_size is {}; lower train.batch_size or add pairs",
                indices.len(),
                cfg.batch_size
            )));
        }
        for &i in &indices {
            let s = store.get(i);
            if s.height < p || s.width < p {
                return Err(Error::data(
                    &s.path,
                    format!(
                        "image is {}x{}, smaller than train.patch_size {p}; lower train.patch_size or remove the pair",
                        s.width, s.height
                    ),
                ));
            }
        }
        Ok(Loader { store, indices: Arc::new(indices), cfg: Arc::new(cfg) })
    }

    /// Full batches per epoch (the last incomplete one is dropped).
    pub fn batches_per_epoch(&self) -> usize {
        self.indices.len() / self.cfg.batch_size
    }

    pub fn config(&self) -> &LoaderConfig {
        &self.cfg
    }

    /// Starts the epoch's workers. Worker `w` prepares batches `w, w + W, ...` in order into its
    /// own bounded channel and the iterator reads them round-robin, so batches arrive in a
    /// fixed order with at most `prefetch` (rounded up to a multiple of W) ready ahead.
    /// Dropping the iterator early stops the workers.
    pub fn epoch(&self, epoch: usize) -> EpochBatches {
        let cfg = &self.cfg;
        let mut order = (*self.indices).clone();
        order.shuffle(&mut rng_for(cfg.seed, Stream::Shuffle, epoch as u64, 0));
        let order = Arc::new(order);
        let total = self.batches_per_epoch();
        let workers = cfg.workers.clamp(1, total.max(1));
        let depth = cfg.prefetch.div_ceil(workers).max(1);
        let mut receivers = Vec::with_capacity(workers);
        let mut handles = Vec::with_capacity(workers);
        for w in 0..workers {
            let (tx, rx) = sync_channel::<RawBatch>(depth);
            let (store, cfg, order) = (self.store.clone(), self.cfg.clone(), order.clone());
            let handle = std::thread::Builder::new()
                .name(format!("loader-{w}"))
                .spawn(move || {
                    for b in (w..total).step_by(workers) {
                        let ids = &order[b * cfg.batch_size..(b + 1) * cfg.batch_size];
                        if tx.send(make_batch(&store, &cfg, ids, epoch)).is_err() {
                            return; // the consumer stopped early
                        }
                    }
                })
                .expect("spawn loader thread");
            receivers.push(rx);
            handles.push(Some(handle));
        }
        EpochBatches { receivers, handles, next: 0, total, store: self.store.clone() }
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
        let w = self.next % self.receivers.len();
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_into_kind_and_number() {
        assert_eq!(parse_name("rain-12.png", "-"), Some(("rain".into(), "12".into())));
        assert_eq!(parse_name("snow_clean-3.JPG", "_clean-"), Some(("snow".into(), "3".into())));
        assert_eq!(parse_name("haze-7.jpeg", "-"), Some(("haze".into(), "7".into())));
        for bad in [
            "rain_clean-1.png",
            "Rain-1.png",
            "rain-1a.png",
            "rain-.png",
            "-1.png",
            "rain-1.txt",
            "rain1.png",
        ] {
            assert_eq!(parse_name(bad, "-"), None, "{bad}");
        }
        assert_eq!(parse_name("rain-1.png", "_clean-"), None);
    }

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
