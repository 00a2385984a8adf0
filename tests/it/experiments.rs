//! Every committed experiment file loads and validates, and the ablations differ from the base
//! only where they say they do.

use promptir::config::{AugmentConfig, AugmentImages, Experiment};
use std::path::Path;

fn load(name: &str) -> Experiment {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments").join(name);
    Experiment::load(&p, &[]).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn every_experiment_file_loads() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("experiments");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "yaml") {
            Experiment::load(&p, &[]).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            n += 1;
        }
    }
    assert!(n >= 6);
}

#[test]
fn the_report_recipe() {
    let e = load("combined_loss.yaml");
    assert_eq!(e.model, promptir::model::ModelConfig::paper());
    assert_eq!(
        (e.train.patch_size, e.train.batch_size, e.train.lr, e.train.warmup_epochs),
        (224, 2, 2e-4, 15.0)
    );
    assert_eq!(
        (e.loss.weight("l1"), e.loss.weight("ssim"), e.loss.weight("perceptual")),
        (1.0, 0.2, 0.05)
    );
    assert_eq!(e.name, "combined_loss");
    let l1 = load("l1_only.yaml");
    assert_eq!(
        (l1.loss.weight("l1"), l1.loss.weight("ssim"), l1.loss.weight("perceptual")),
        (1.0, 0.0, 0.0)
    );
    let p = load("patch160_bs4.yaml");
    assert_eq!((p.train.patch_size, p.train.batch_size), (160, 4));
    assert_eq!(p.loss, e.loss);
    let t = load("tiny.yaml");
    assert_eq!(t.model, promptir::model::ModelConfig::tiny());
    // The report's augmentations, on both images: crop, hflip, +-15 degrees, jitter, blur,
    // erasing; no vertical flips or quarter turns (the flips_rot90 experiments have those).
    for exp in [&e, &l1, &p, &t] {
        assert_report_augment(&exp.augment, &exp.name);
    }
    assert_report_augment(&load("tiny_l1_only.yaml").augment, "tiny_l1_only");
    for name in ["flips_rot90.yaml", "tiny_flips_rot90.yaml"] {
        let a = load(name).augment;
        assert_eq!((a.hflip, a.vflip, a.rot90), (0.5, 0.5, 0.5), "{name}");
        let photometric = [a.rotate.prob, a.color_jitter.prob, a.blur.prob, a.erase.prob];
        assert_eq!(photometric, [0.0; 4], "{name}");
    }
    let f = load("flips_rot90.yaml");
    assert_eq!((f.loss, f.train, f.model), (e.loss.clone(), e.train.clone(), e.model.clone()));
    let h = load("heavy_augment.yaml").augment;
    assert_eq!((h.vflip, h.rot90), (0.5, 0.5));
    assert_report_augment(&AugmentConfig { vflip: 0.0, rot90: 0.0, ..h }, "heavy_augment");
}

#[test]
fn upstreams_recipe() {
    let u = load("upstream.yaml");
    assert_eq!(u.model, promptir::model::ModelConfig::paper());
    let t = &u.train;
    assert_eq!((t.patch_size, t.batch_size, t.lr, t.weight_decay), (128, 8, 2e-4, 0.01));
    assert_eq!((t.epochs, t.max_epochs, t.warmup_epochs), (120, Some(150.0), 15.0));
    assert_eq!((t.warmup_start_lr, t.eta_min), (0.0, 0.0));
    assert_eq!(t.schedule_unit, promptir::config::ScheduleUnit::EpochLagged);
    assert_eq!(
        (u.loss.weight("l1"), u.loss.weight("ssim"), u.loss.weight("perceptual")),
        (1.0, 0.0, 0.0)
    );
    let a = &u.augment;
    assert_eq!((a.hflip, a.vflip, a.rot90), (0.5, 0.5, 0.5));
    assert_eq!([a.rotate.prob, a.color_jitter.prob, a.blur.prob, a.erase.prob], [0.0; 4]);
}

fn assert_report_augment(a: &AugmentConfig, name: &str) {
    assert!(a.hflip > 0.0 && a.vflip == 0.0 && a.rot90 == 0.0, "{name}: {a:?}");
    assert!(a.rotate.prob > 0.0 && a.rotate.degrees == 15.0, "{name}: {a:?}");
    let jitter = &a.color_jitter;
    assert!(jitter.prob > 0.0 && jitter.brightness > 0.0 && jitter.contrast > 0.0, "{name}");
    assert!(jitter.saturation > 0.0, "{name}: {a:?}");
    assert!(a.blur.prob > 0.0 && a.blur.images == AugmentImages::Both, "{name}: {a:?}");
    assert!(a.erase.prob > 0.0 && a.erase.images == AugmentImages::Both, "{name}: {a:?}");
}

#[test]
fn the_tiny_ablation_mirrors_the_report_rows() {
    let t = load("tiny.yaml");
    let l1 = load("tiny_l1_only.yaml");
    let p = load("tiny_patch48_bs16.yaml");
    assert_eq!(
        (l1.loss.weight("l1"), l1.loss.weight("ssim"), l1.loss.weight("perceptual")),
        (1.0, 0.0, 0.0)
    );
    assert_eq!((t.train.patch_size, t.train.batch_size), (64, 8));
    assert_eq!((p.train.patch_size, p.train.batch_size), (48, 16));
    assert_eq!((&p.loss, &p.model, p.train.epochs), (&t.loss, &t.model, t.train.epochs));
    // Pixels per step within 15% of each other, as 160^2 x 4 is of 224^2 x 2.
    let px = |e: &Experiment| (e.train.patch_size.pow(2) * e.train.batch_size) as f64;
    assert!((px(&p) / px(&t) - 1.0).abs() < 0.15);
}

#[test]
fn only_the_paper_scale_report_rows_carry_the_published_numbers() {
    let psnr = |name: &str| load(name).published.map(|p| (p.psnr, p.label));
    let (l1, l1_label) = psnr("l1_only.yaml").unwrap();
    let (comb, comb_label) = psnr("combined_loss.yaml").unwrap();
    assert_eq!((l1, comb), (32.02, 32.64));
    assert!(l1_label.contains("public test") && l1_label.contains("L1 + TTA"), "{l1_label}");
    assert!(comb_label.contains("public test") && comb_label.contains("combined"), "{comb_label}");
    // Both extend base.yaml, which must not carry a number for them to inherit.
    for other in ["base.yaml", "patch160_bs4.yaml", "heavy_augment.yaml", "tiny.yaml"] {
        assert_eq!(psnr(other), None, "{other}");
    }
    for other in ["tiny_l1_only.yaml", "tiny_patch48_bs16.yaml"] {
        assert_eq!(psnr(other), None, "{other}");
    }
}

/// `<arch>.yaml` is the report's recipe with only the network changed, and `tiny_<arch>.yaml`
/// is `tiny.yaml` so; MoCE-IR's also weigh its balance loss as upstream (0.01).
#[test]
fn each_arch_experiment_changes_only_the_network() {
    use promptir::model::{AdaIrConfig, MoceIrConfig, ModelConfig, NafNetConfig, RestormerConfig};
    for (base, file, model) in [
        ("base.yaml", "restormer.yaml", ModelConfig::Restormer(RestormerConfig::paper())),
        ("tiny.yaml", "tiny_restormer.yaml", ModelConfig::Restormer(RestormerConfig::tiny())),
        ("base.yaml", "nafnet.yaml", ModelConfig::Nafnet(NafNetConfig::sidd())),
        ("tiny.yaml", "tiny_nafnet.yaml", ModelConfig::Nafnet(NafNetConfig::tiny())),
        ("base.yaml", "adair.yaml", ModelConfig::Adair(AdaIrConfig::paper())),
        ("tiny.yaml", "tiny_adair.yaml", ModelConfig::Adair(AdaIrConfig::tiny())),
        ("base.yaml", "moce_ir.yaml", ModelConfig::MoceIr(MoceIrConfig::paper())),
        ("tiny.yaml", "tiny_moce_ir.yaml", ModelConfig::MoceIr(MoceIrConfig::tiny())),
    ] {
        let (mut e, b) = (load(file), load(base));
        assert_eq!(e.model, model, "{file}");
        if e.model.arch() == promptir::model::Arch::MoceIr {
            assert_eq!(e.loss.weight("balance"), 0.01, "{file}");
            e.loss.set_weight("balance", 0.0);
        }
        e.model = b.model.clone();
        e.name = b.name.clone();
        assert_eq!(e, b, "{file} differs from {base} beyond the network");
    }
}
