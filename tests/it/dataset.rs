//! The dataset on small synthetic folders: pairing by name, every bad-input message, the split,
//! and the loader (shapes, determinism across worker counts, early stop).

use promptir::config::AugmentConfig;
use promptir::data::{self, Loader, LoaderConfig, Store};
use promptir::io::RgbImage;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const SIZE: usize = 32;

/// A degraded image whose pixels encode (kind, n); its clean twin is the negative (255 - v),
/// so a mismatched pair or a geometric step applied to one image only is visible.
fn degraded_image(kind: usize, n: usize, w: usize, h: usize) -> RgbImage {
    let hwc = (0..w * h * 3).map(|i| ((i * 7 + n * 31 + kind * 101 + i * i) % 256) as u8).collect();
    RgbImage { width: w, height: h, hwc }
}

fn negative(img: &RgbImage) -> RgbImage {
    RgbImage { hwc: img.hwc.iter().map(|v| 255 - v).collect(), ..img.clone() }
}

/// `rain-{nums}` and `snow-{nums}` pairs of SIZE x SIZE under `root/train`.
fn make_dataset(root: &Path, rain: &[usize], snow: &[usize]) {
    let (d, c) = (root.join("train/degraded"), root.join("train/clean"));
    std::fs::create_dir_all(&d).unwrap();
    std::fs::create_dir_all(&c).unwrap();
    for (k, (kind, nums)) in [("rain", rain), ("snow", snow)].into_iter().enumerate() {
        for &n in nums {
            let img = degraded_image(k, n, SIZE, SIZE);
            img.save_png(&d.join(format!("{kind}-{n}.png"))).unwrap();
            negative(&img).save_png(&c.join(format!("{kind}_clean-{n}.png"))).unwrap();
        }
    }
}

fn standard(root: &Path) {
    make_dataset(root, &[1, 2, 10, 3, 4], &[2, 1, 11]);
}

fn err_of<T: std::fmt::Debug>(r: promptir::Result<T>) -> String {
    r.expect_err("expected an error").to_string()
}

fn load(root: &Path) -> promptir::Result<Store> {
    Store::load(&data::scan_pairs(root)?, 2)
}

#[test]
fn pairs_are_matched_by_name_and_sorted_numerically() {
    let dir = tempfile::tempdir().unwrap();
    standard(dir.path());
    let pairs = data::scan_pairs(dir.path()).unwrap();
    let names: Vec<&str> = pairs.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "rain-1.png",
            "rain-2.png",
            "rain-3.png",
            "rain-4.png",
            "rain-10.png",
            "snow-1.png",
            "snow-2.png",
            "snow-11.png"
        ]
    );
    for p in &pairs {
        let clean = p.clean.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(clean, p.name.replace('-', "_clean-"));
        assert_eq!(p.kind, &p.name[..4]);
    }
    let store = Store::load(&pairs, 3).unwrap();
    for (s, p) in store.samples().iter().zip(&pairs) {
        assert_eq!((s.height, s.width), (SIZE, SIZE));
        assert!(s.degraded.iter().zip(&s.clean).all(|(d, c)| d + c == 255), "{}", s.name);
        assert!(s.name == p.name && s.kind == p.kind && s.degraded.len() == SIZE * SIZE * 3);
    }
}

#[test]
fn other_kinds_and_jpg_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    standard(dir.path());
    let d = dir.path().join("train");
    let img = degraded_image(3, 5, SIZE, SIZE);
    img.save_png(&d.join("degraded/haze-5.png")).unwrap();
    image::save_buffer(
        d.join("clean/haze_clean-5.jpg"),
        &img.hwc,
        SIZE as u32,
        SIZE as u32,
        image::ColorType::Rgb8,
    )
    .unwrap();
    std::fs::write(d.join("degraded/.DS_Store"), b"junk").unwrap();
    let pairs = data::scan_pairs(dir.path()).unwrap();
    assert_eq!(pairs[0].name, "haze-5.png");
    assert!(pairs[0].clean.ends_with("haze_clean-5.jpg"));
    assert_eq!(load(dir.path()).unwrap().len(), 9);
}

#[test]
fn each_bad_input_is_named_with_a_fix() {
    type Mutate = fn(&Path);
    let cases: [(&str, Mutate, &[&str]); 10] = [
        (
            "missing clean twin",
            |r| std::fs::remove_file(r.join("train/clean/rain_clean-3.png")).unwrap(),
            &["rain-3.png", "rain_clean-3.png", "no clean twin"],
        ),
        (
            "missing degraded twin",
            |r| std::fs::remove_file(r.join("train/degraded/snow-2.png")).unwrap(),
            &["snow_clean-2.png", "snow-2.png", "no degraded twin"],
        ),
        (
            "unexpected name",
            |r| std::fs::write(r.join("train/degraded/rain_3.png"), b"x").unwrap(),
            &["rain_3.png", "unexpected file name", "rain-1.png"],
        ),
        (
            "duplicate number",
            |r| {
                std::fs::copy(
                    r.join("train/degraded/rain-1.png"),
                    r.join("train/degraded/rain-1.jpg"),
                )
                .map(drop)
                .unwrap()
            },
            &["rain-1", "same pair number"],
        ),
        (
            "empty folder",
            |r| {
                std::fs::remove_dir_all(r.join("train/degraded")).unwrap();
                std::fs::create_dir(r.join("train/degraded")).unwrap();
            },
            &["train/degraded", "no images"],
        ),
        (
            "missing folder",
            |r| std::fs::remove_dir_all(r.join("train/clean")).unwrap(),
            &["train/clean", "missing folder", "data.root"],
        ),
        (
            "size mismatch",
            |r| {
                negative(&degraded_image(0, 4, SIZE, SIZE - 2))
                    .save_png(&r.join("train/clean/rain_clean-4.png"))
                    .unwrap()
            },
            &["rain_clean-4.png", "rain-4.png", "32x30", "32x32"],
        ),
        (
            "zero-byte png",
            |r| std::fs::write(r.join("train/degraded/rain-2.png"), b"").unwrap(),
            &["rain-2.png", "empty file"],
        ),
        (
            "text named .png",
            |r| {
                std::fs::write(r.join("train/clean/snow_clean-11.png"), b"hello, not an image")
                    .unwrap()
            },
            &["snow_clean-11.png", "not a readable image"],
        ),
        (
            "uppercase kind",
            |r| {
                std::fs::rename(
                    r.join("train/degraded/rain-1.png"),
                    r.join("train/degraded/Rain-1.png"),
                )
                .unwrap()
            },
            &["Rain-1.png", "unexpected file name"],
        ),
    ];
    for (what, mutate, needles) in cases {
        let dir = tempfile::tempdir().unwrap();
        standard(dir.path());
        mutate(dir.path());
        let e = err_of(load(dir.path()));
        for n in needles {
            assert!(e.contains(n), "{what}: {n:?} missing from: {e}");
        }
        assert!(!e.contains('\n'), "{what}: one line: {e}");
        println!("{what}: {e}");
    }
}

fn loader_cfg(workers: usize, prefetch: usize) -> LoaderConfig {
    let mut augment = AugmentConfig::default();
    augment.rotate.prob = 0.5;
    augment.color_jitter.prob = 0.5;
    augment.blur.prob = 0.5;
    augment.erase.prob = 0.5;
    LoaderConfig {
        key: "train".into(),
        batch_size: 3,
        patch_size: 16,
        augment,
        seed: 7,
        workers,
        prefetch,
        rank: 0,
        world: 1,
    }
}

#[test]
fn patch_larger_than_an_image_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    make_dataset(dir.path(), &[1, 2], &[1]);
    let d = dir.path().join("train");
    let small = degraded_image(1, 9, 24, 20);
    small.save_png(&d.join("degraded/snow-9.png")).unwrap();
    negative(&small).save_png(&d.join("clean/snow_clean-9.png")).unwrap();
    let store = Arc::new(load(dir.path()).unwrap());
    let cfg = LoaderConfig { batch_size: 1, patch_size: 24, ..loader_cfg(1, 1) };
    let e = err_of(Loader::new(store.clone(), (0..4).collect(), cfg.clone()));
    assert!(
        e.contains("snow-9.png") && e.contains("24x20") && e.contains("train.patch_size 24"),
        "{e}"
    );
    let e = err_of(Loader::new(store, vec![0, 1], LoaderConfig { batch_size: 3, ..cfg }));
    assert!(e.contains("train.batch_size"), "{e}");
}

#[test]
fn split_is_stratified_seeded_and_complete() {
    let kinds: Vec<&str> = [["rain"; 7].as_slice(), &["snow"; 3], &["haze"]].concat();
    let s = data::split(&kinds, 0.1, 3);
    // round(0.7) = 1 rain, round(0.3) -> at least 1 snow, the single haze pair stays in train.
    let count = |k: &str| s.val.iter().filter(|&&i| kinds[i] == k).count();
    assert_eq!((count("rain"), count("snow"), count("haze")), (1, 1, 0));
    let mut all = [s.train.clone(), s.val.clone()].concat();
    all.sort();
    assert_eq!(all, (0..kinds.len()).collect::<Vec<_>>());
    assert_eq!(s, data::split(&kinds, 0.1, 3));
    assert!((0..10).any(|seed| data::split(&kinds, 0.1, seed).val != s.val), "the seed matters");
    let half = data::split(&kinds, 0.5, 3);
    assert_eq!(half.val.len(), 4 + 2); // round(3.5) = 4 rain, round(1.5) = 2 snow
    assert!(data::split(&kinds, 0.0, 3).val.is_empty());
    // Never everything of a kind: 2 pairs at 0.9 keep one for training.
    assert_eq!(data::split(&["rain", "rain"], 0.9, 1).val.len(), 1);
}

/// (degraded, clean, indices, kinds) of one batch, comparable with `==`.
type FlatBatch = (Vec<f32>, Vec<f32>, Vec<usize>, Vec<String>);

fn epoch_batches(loader: &Loader, epoch: usize) -> Vec<FlatBatch> {
    flat_batches(loader.epoch(epoch))
}

fn flat_batches(batches: impl Iterator<Item = promptir::data::Batch>) -> Vec<FlatBatch> {
    batches
        .map(|b| {
            let flat = |t: &tch::Tensor| Vec::<f32>::try_from(t.flatten(0, -1)).unwrap();
            (flat(&b.degraded), flat(&b.clean), b.indices, b.kinds)
        })
        .collect()
}

#[test]
fn loader_batches_are_deterministic_whatever_the_worker_count() {
    let dir = tempfile::tempdir().unwrap();
    standard(dir.path());
    let store = Arc::new(load(dir.path()).unwrap());
    let idx: Vec<usize> = (0..8).collect();
    let one = Loader::new(store.clone(), idx.clone(), loader_cfg(1, 1)).unwrap();
    let many = Loader::new(store.clone(), idx.clone(), loader_cfg(3, 5)).unwrap();
    assert_eq!(one.batches_per_epoch(), 2); // 8 pairs, batch 3: the last 2 are dropped
    let e0 = epoch_batches(&one, 0);
    assert_eq!(e0, epoch_batches(&many, 0));
    assert_eq!(epoch_batches(&one, 1), epoch_batches(&many, 1));
    assert_ne!(e0, epoch_batches(&one, 1), "each epoch reshuffles and redraws");
    let other_seed =
        Loader::new(store.clone(), idx, LoaderConfig { seed: 8, ..loader_cfg(2, 2) }).unwrap();
    assert_ne!(e0, epoch_batches(&other_seed, 0));
    let mut seen: Vec<usize> = e0.iter().flat_map(|b| b.2.clone()).collect();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), 6, "no sample twice in an epoch");
    for (_, _, indices, kinds) in &e0 {
        for (i, k) in indices.iter().zip(kinds) {
            assert_eq!(&store.get(*i).kind, k);
        }
    }
}

#[test]
fn an_epoch_started_at_a_batch_equals_the_rest_of_the_whole_epoch() {
    // What a resumed run relies on, without building the batches it already took.
    let dir = tempfile::tempdir().unwrap();
    standard(dir.path());
    let store = Arc::new(load(dir.path()).unwrap());
    let cfg = LoaderConfig { batch_size: 1, ..loader_cfg(3, 4) };
    let loader = Loader::new(store, (0..8).collect(), cfg).unwrap();
    let whole = epoch_batches(&loader, 2);
    assert_eq!(whole.len(), 8);
    for first in [0, 1, 2, 4, 7, 8, 9] {
        let rest = flat_batches(loader.epoch_from(2, first));
        assert_eq!(rest, whole[first.min(8)..], "from batch {first}");
        assert_eq!(loader.epoch_from(2, first).len(), 8 - first.min(8));
    }
}

#[test]
fn two_ranks_split_each_global_batch_without_overlap() {
    let dir = tempfile::tempdir().unwrap();
    standard(dir.path());
    let store = Arc::new(load(dir.path()).unwrap());
    let idx: Vec<usize> = (0..8).collect();
    // One process with batch 4 against 2 ranks with batch 2 each: the same pairs, crops and
    // augmentation, rank 0 the first half of every batch and rank 1 the second.
    let one =
        Loader::new(store.clone(), idx.clone(), LoaderConfig { batch_size: 4, ..loader_cfg(2, 2) })
            .unwrap();
    let ranks: Vec<Loader> = (0..2)
        .map(|rank| {
            let cfg = LoaderConfig { batch_size: 2, rank, world: 2, ..loader_cfg(1, 1) };
            Loader::new(store.clone(), idx.clone(), cfg).unwrap()
        })
        .collect();
    assert_eq!((one.batches_per_epoch(), ranks[0].batches_per_epoch()), (2, 2));
    for epoch in 0..2 {
        let (whole, r0, r1) = (
            epoch_batches(&one, epoch),
            epoch_batches(&ranks[0], epoch),
            epoch_batches(&ranks[1], epoch),
        );
        assert_eq!((whole.len(), r0.len(), r1.len()), (2, 2, 2));
        for ((w, a), b) in whole.iter().zip(&r0).zip(&r1) {
            assert_eq!(w.2, [a.2.clone(), b.2.clone()].concat(), "indices");
            assert_eq!(w.0, [a.0.clone(), b.0.clone()].concat(), "degraded patches");
            assert_eq!(w.1, [a.1.clone(), b.1.clone()].concat(), "clean patches");
        }
    }
    // A global batch larger than the pairs is refused, naming both factors.
    let cfg = LoaderConfig { batch_size: 3, rank: 0, world: 3, ..loader_cfg(1, 1) };
    let e = err_of(Loader::new(store, idx, cfg));
    assert!(e.contains("global batch of 9") && e.contains("3 processes"), "{e}");
}

#[test]
fn loader_batches_have_the_right_shape_and_keep_pairs_aligned() {
    let dir = tempfile::tempdir().unwrap();
    standard(dir.path());
    let store = Arc::new(load(dir.path()).unwrap());
    // Geometric steps only: clean stays exactly 1 - degraded in every batch.
    let mut cfg = loader_cfg(2, 2);
    cfg.augment.color_jitter.prob = 0.0;
    cfg.augment.blur.prob = 0.0;
    cfg.augment.erase.prob = 0.0;
    cfg.augment.rotate.prob = 1.0;
    let loader = Loader::new(store, (0..8).collect(), cfg).unwrap();
    let mut n = 0;
    for b in loader.epoch(4) {
        assert_eq!(b.degraded.size(), [3, 3, 16, 16]);
        assert_eq!(b.clean.size(), [3, 3, 16, 16]);
        assert_eq!(b.degraded.kind(), tch::Kind::Float);
        let (lo, hi) =
            (f64::try_from(b.degraded.min()).unwrap(), f64::try_from(b.degraded.max()).unwrap());
        assert!(lo >= 0.0 && hi <= 1.0 && hi > lo);
        let worst = f64::try_from((&b.degraded + &b.clean - 1.0).abs().max()).unwrap();
        assert!(worst < 1e-5, "{worst}");
        assert!(b.wait < Duration::from_secs(5));
        n += 1;
    }
    assert_eq!(n, 2);
}

#[test]
fn dropping_an_epoch_early_does_not_hang() {
    let dir = tempfile::tempdir().unwrap();
    make_dataset(dir.path(), &(1..=12).collect::<Vec<_>>(), &(1..=12).collect::<Vec<_>>());
    let store = Arc::new(load(dir.path()).unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let cfg = LoaderConfig { batch_size: 1, ..loader_cfg(3, 1) };
        let loader = Loader::new(store, (0..24).collect(), cfg).unwrap();
        for _ in 0..3 {
            let mut it = loader.epoch(0);
            assert_eq!(it.len(), 24);
            assert!(it.next().is_some());
            drop(it); // workers are blocked on full channels here
        }
        drop(loader.epoch(1)); // and before any batch is taken
        tx.send(()).unwrap();
    });
    rx.recv_timeout(Duration::from_secs(60)).expect("dropping the epoch iterator hung");
}

#[test]
fn test_folder_is_listed_numerically_with_optional_targets() {
    let dir = tempfile::tempdir().unwrap();
    let (d, c) = (dir.path().join("test/degraded"), dir.path().join("test/clean"));
    std::fs::create_dir_all(&d).unwrap();
    for n in [10, 2, 0, 1] {
        degraded_image(0, n, 8, 8).save_png(&d.join(format!("{n}.png"))).unwrap();
    }
    let t = data::scan_test(dir.path()).unwrap();
    let names: Vec<&str> = t.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["0.png", "1.png", "2.png", "10.png"]);
    assert!(t.iter().all(|t| t.clean.is_none()));

    std::fs::create_dir_all(&c).unwrap();
    for n in [10, 2, 0] {
        degraded_image(0, n, 8, 8).save_png(&c.join(format!("{n}.png"))).unwrap();
    }
    let e = err_of(data::scan_test(dir.path()));
    assert!(e.contains("1.png") && e.contains("no target"), "{e}");
    degraded_image(0, 1, 8, 8).save_png(&c.join("1.png")).unwrap();
    let t = data::scan_test(dir.path()).unwrap();
    assert!(t.iter().all(|t| t.clean.as_ref().unwrap().ends_with(&t.name)));
    degraded_image(0, 1, 8, 8).save_png(&c.join("5.png")).unwrap();
    assert!(err_of(data::scan_test(dir.path())).contains("stray target"));
    std::fs::remove_file(c.join("5.png")).unwrap();
    std::fs::write(d.join("notes.txt"), b"x").unwrap();
    assert!(err_of(data::scan_test(dir.path())).contains("notes.txt"));
    std::fs::remove_dir_all(dir.path().join("test")).unwrap();
    assert!(err_of(data::scan_test(dir.path())).contains("missing folder"));
}
