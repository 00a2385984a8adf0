//! Metrics, losses and the VGG16 perceptual network against their Python references
//! (scikit-image, pytorch_msssim, torchvision), computed by
//! `scripts/reference/loss_metrics_ref.py`.

use crate::common::{loss_metrics_fixtures, max_abs_diff};
use promptir::config::{Distance, LossConfig};
use promptir::eval::metrics::{psnr_u8, ssim_u8, Metric};
use promptir::io::{save_tensors, TensorFile};
use promptir::train::Vgg16Features;
use promptir::train::{gaussian_ssim, Loss, Source, TERMS};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use tch::{Device, Tensor};

fn open(name: &str) -> (TensorFile, BTreeMap<String, String>) {
    let f = TensorFile::open(&loss_metrics_fixtures().join(format!("{name}.safetensors"))).unwrap();
    let meta = f.metadata();
    (f, meta)
}

fn bytes(t: &Tensor) -> Vec<u8> {
    let mut v = vec![0u8; t.numel()];
    t.copy_data(&mut v, t.numel());
    v
}

fn scalar(t: &Tensor) -> f64 {
    f64::try_from(t).unwrap()
}

/// max |a - b| / max |b|.
fn rel_diff(a: &Tensor, b: &Tensor) -> f64 {
    max_abs_diff(a, b) / scalar(&b.abs().max())
}

fn vgg_weights() -> PathBuf {
    loss_metrics_fixtures().join("vgg16_random.safetensors")
}

#[test]
fn psnr_and_ssim_match_scikit_image() {
    let (f, meta) = open("metrics");
    let cases: Vec<Value> = serde_json::from_str(&meta["cases"]).unwrap();
    let (mut dp, mut ds) = (0f64, 0f64);
    for (i, c) in cases.iter().enumerate() {
        let pred = bytes(&f.tensor(&format!("pred.{i}")).unwrap());
        let gt = bytes(&f.tensor(&format!("gt.{i}")).unwrap());
        let (h, w) = (c["h"].as_u64().unwrap() as usize, c["w"].as_u64().unwrap() as usize);
        let p = psnr_u8(&pred, &gt);
        let s = ssim_u8(&pred, &gt, h, w);
        let (ep, es) =
            ((p - c["psnr"].as_f64().unwrap()).abs(), (s - c["ssim"].as_f64().unwrap()).abs());
        assert!(ep <= 1e-9, "case {i} ({h}x{w}): psnr {p} vs {}", c["psnr"]);
        assert!(es <= 1e-9, "case {i} ({h}x{w}): ssim {s} vs {}", c["ssim"]);
        (dp, ds) = (dp.max(ep), ds.max(es));
    }
    eprintln!(
        "vs scikit-image over {} pairs: psnr max diff {dp:e} dB, ssim max diff {ds:e}",
        cases.len()
    );
}

/// Each `eval --metric` convention against scikit-image on the same float outputs (a little
/// outside [0, 1], as a network's are) and u8 ground truths: course, rgb (PromptIR's test.py)
/// and y (BasicSR's luma with the Gaussian SSIM), down to an 11x13 image.
#[test]
fn each_metric_convention_matches_scikit_image() {
    let (f, meta) = open("conventions");
    let cases: Vec<Value> = serde_json::from_str(&meta["cases"]).unwrap();
    let mut worst = 0f64;
    for (i, c) in cases.iter().enumerate() {
        let pred = f.tensor(&format!("pred.{i}")).unwrap();
        let gt = f.tensor(&format!("gt.{i}")).unwrap().to_kind(tch::Kind::Float) / 255.0;
        for metric in [Metric::Course, Metric::Rgb, Metric::Y] {
            let (p, s) = metric.score(&pred, &gt);
            let want = &c[metric.name()];
            let (wp, ws) = (want[0].as_f64().unwrap(), want[1].as_f64().unwrap());
            eprintln!("case {i} {}: psnr {p} vs {wp}, ssim {s} vs {ws}", metric.name());
            assert!((p - wp).abs() <= 1e-6, "case {i} {}: psnr {p} vs {wp}", metric.name());
            assert!((s - ws).abs() <= 1e-6, "case {i} {}: ssim {s} vs {ws}", metric.name());
            worst = worst.max((p - wp).abs()).max((s - ws).abs());
        }
        // The three differ: the conventions are not the same number under other names.
        let (course, rgb, y) = (
            Metric::Course.score(&pred, &gt),
            Metric::Rgb.score(&pred, &gt),
            Metric::Y.score(&pred, &gt),
        );
        assert!(course.0 != rgb.0 && rgb.0 != y.0, "case {i}: {course:?} {rgb:?} {y:?}");
    }
    eprintln!("metric conventions vs scikit-image, {} cases: max diff {worst:e}", cases.len());
}

#[test]
fn ssim_and_its_gradient_match_pytorch_msssim() {
    let (f, meta) = open("ssim_loss");
    let want: Vec<f64> = serde_json::from_str(&meta["ssim"]).unwrap();
    for (i, w) in want.iter().enumerate() {
        let t = |k: &str| f.tensor(&format!("{k}.{i}")).unwrap();
        let pred = t("pred").set_requires_grad(true);
        let loss: Tensor = 1.0 - gaussian_ssim(&pred, &t("target"));
        loss.backward();
        let dv = (1.0 - scalar(&loss) - w).abs();
        let dg = rel_diff(&pred.grad(), &t("grad"));
        eprintln!("ssim case {i} {:?}: value diff {dv:e}, gradient rel diff {dg:e}", pred.size());
        assert!(dv <= 1e-6, "case {i}: ssim {} vs {w}", 1.0 - scalar(&loss));
        assert!(dg <= 1e-4, "case {i}: gradient rel diff {dg:e}");
    }
}

#[test]
fn vgg_features_match_torchvision() {
    let (f, _) = open("vgg");
    let layers = [3, 8, 15, 22];
    let vgg = Vgg16Features::load(&vgg_weights(), Device::Cpu, &layers).unwrap();
    let vars = vgg.var_store().variables();
    assert!(vars.values().all(|t| !t.requires_grad()), "VGG16 must be frozen");
    let feats = tch::no_grad(|| vgg.forward(&f.tensor("pred").unwrap()));
    for (n, got) in layers.iter().zip(&feats) {
        let d = max_abs_diff(got, &f.tensor(&format!("feat.{n}")).unwrap());
        eprintln!("features.{n} {:?}: max abs diff {d:e}", got.size());
        assert!(d <= 1e-4, "features.{n}: max abs diff {d:e}");
    }
}

#[test]
fn perceptual_distances_match_python() {
    let (f, meta) = open("vgg");
    let v: Value = serde_json::from_str(&meta["values"]).unwrap();
    let (pred, target) = (f.tensor("pred").unwrap(), f.tensor("target").unwrap());
    for (d, key) in [(Distance::L1, "perceptual_l1"), (Distance::L2, "perceptual_l2")] {
        let mut cfg = LossConfig::only(&[("perceptual", 0.05)]);
        (cfg.perceptual_distance, cfg.vgg_weights) = (d, vgg_weights());
        let t =
            tch::no_grad(|| Loss::new(&cfg, Device::Cpu).unwrap().compute(&pred, &target, None));
        assert!(t.get("l1").is_none() && t.get("ssim").is_none());
        let (got, want) = (scalar(t.get("perceptual").unwrap()), v[key].as_f64().unwrap());
        eprintln!("{key}: {got} vs {want} (diff {:e})", (got - want).abs());
        assert!((got - want).abs() <= 1e-6, "{key}: {got} vs {want}");
        assert!((scalar(&t.total) - 0.05 * got).abs() <= 1e-9, "total is the weighted term");
    }
}

/// Every term of the table against `scripts/reference/loss_metrics_ref.py`: value and gradient
/// alone, then all of them weighted together. A term without a reference fails here.
#[test]
fn every_loss_term_and_their_weighted_sum_match_pytorch() {
    let (f, meta) = open("terms");
    let v: Value = serde_json::from_str(&meta["values"]).unwrap();
    let (pred, target) = (f.tensor("pred").unwrap(), f.tensor("target").unwrap());
    let with_vgg = |mut c: LossConfig| {
        c.vgg_weights = vgg_weights();
        c
    };
    let mut weights = Vec::new();
    for term in &TERMS {
        let key = term.key;
        if matches!(term.source, Source::Network) {
            // The network's own term (MoCE-IR's balance loss): tests/it/parity.rs checks it
            // against moce_ir_ref.py, and the loss passes it through weighted.
            assert_eq!(key, "balance");
            continue;
        }
        let want = v[key].as_f64().unwrap_or_else(|| {
            panic!("loss term {key} has no reference value: add it to loss_metrics_ref.py")
        });
        let loss = Loss::new(&with_vgg(LossConfig::only(&[(key, 1.0)])), Device::Cpu).unwrap();
        let x = pred.copy().set_requires_grad(true);
        let t = loss.compute(&x, &target, None);
        t.total.backward();
        assert_eq!(t.named().len(), 2, "{key}: only the total and the term itself");
        let got = scalar(t.get(key).unwrap());
        let dg = rel_diff(&x.grad(), &f.tensor(&format!("grad.{key}")).unwrap());
        eprintln!("{key}: {got} vs {want}, gradient rel diff {dg:e}");
        assert!((got - want).abs() <= 1e-6 * want.abs().max(1.0), "{key}: {got} vs {want}");
        assert!(dg <= 1e-4, "{key}: gradient rel diff {dg:e}");
        weights.push((key, v["weights"][key].as_f64().unwrap()));
    }
    let x = pred.copy().set_requires_grad(true);
    let t = Loss::new(&with_vgg(LossConfig::only(&weights)), Device::Cpu)
        .unwrap()
        .compute(&x, &target, None);
    t.total.backward();
    let want = v["total"].as_f64().unwrap();
    assert!((scalar(&t.total) - want).abs() <= 1e-6, "total {} vs {want}", scalar(&t.total));
    let dg = rel_diff(&x.grad(), &f.tensor("grad.total").unwrap());
    assert!(dg <= 1e-4, "total: gradient rel diff {dg:e}");
}

#[test]
fn vgg_loading_is_strict_but_drops_the_classifier() {
    let src = TensorFile::open(&vgg_weights()).unwrap();
    let all: Vec<(String, Tensor)> =
        src.header().keys().map(|k| (k.clone(), src.tensor(k).unwrap())).collect();
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, tensors: Vec<(String, Tensor)>| {
        let p = dir.path().join(name);
        save_tensors(&p, &tensors, BTreeMap::new()).unwrap();
        p
    };
    let copy = || all.iter().map(|(k, t)| (k.clone(), t.shallow_clone())).collect::<Vec<_>>();

    let mut with_classifier = copy();
    with_classifier.push(("classifier.6.bias".into(), Tensor::zeros([1000], tch::kind::FLOAT_CPU)));
    assert!(
        Vgg16Features::load(&write("c.safetensors", with_classifier), Device::Cpu, &[3]).is_ok()
    );

    let missing: Vec<_> = copy().into_iter().filter(|(k, _)| k != "features.28.bias").collect();
    let e = Vgg16Features::load(&write("m.safetensors", missing), Device::Cpu, &[3]).unwrap_err();
    assert!(e.to_string().contains("missing key(s): features.28.bias"), "{e}");

    let mut extra = copy();
    extra.push(("features.1.weight".into(), Tensor::zeros([1], tch::kind::FLOAT_CPU)));
    let e = Vgg16Features::load(&write("x.safetensors", extra), Device::Cpu, &[3]).unwrap_err();
    assert!(e.to_string().contains("unexpected key(s): features.1.weight"), "{e}");

    let wrong: Vec<_> = copy()
        .into_iter()
        .map(|(k, t)| if k == "features.0.bias" { (k, t.narrow(0, 0, 1)) } else { (k, t) })
        .collect();
    let e = Vgg16Features::load(&write("w.safetensors", wrong), Device::Cpu, &[3]).unwrap_err();
    assert!(e.to_string().contains("features.0.bias (file [1], model [64])"), "{e}");
}

/// Runs `scripts/export_vgg16.py` with `args`; returns (exit code, stderr).
fn export_vgg(args: &[&str]) -> (Option<i32>, String) {
    let out = std::process::Command::new(crate::common::python())
        .arg(crate::common::repo().join("scripts/export_vgg16.py"))
        .args(args)
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn vgg_export_from_a_torchvision_state_dict_equals_the_direct_export() {
    let t = tempfile::tempdir().unwrap();
    let p = |n: &str| t.path().join(n).to_str().unwrap().to_string();
    let (direct, converted, pth) = (p("direct.safetensors"), p("conv.safetensors"), p("vgg16.pth"));
    // The random-init model, exported directly and saved whole with torch.save(state_dict()).
    let (code, err) =
        export_vgg(&["--random-init", "--seed", "3", "--output", &direct, "--save-pth", &pth]);
    assert_eq!(code, Some(0), "{err}");
    // torchvision's cached file has this layout: an OrderedDict of all 32 tensors.
    let probe =
        "import sys, torch; sd = torch.load(sys.argv[1], map_location='cpu', weights_only=True); \
                 print(type(sd).__name__, len(sd), 'classifier.6.weight' in sd)";
    assert_eq!(crate::common::run_python(&["-c", probe, &pth]).trim(), "OrderedDict 32 True");
    let (code, err) = export_vgg(&["--from-pth", &pth, "--output", &converted]);
    assert_eq!(code, Some(0), "{err}");

    let (a, b) =
        (TensorFile::open(direct.as_ref()).unwrap(), TensorFile::open(converted.as_ref()).unwrap());
    assert_eq!(a.header(), b.header(), "same keys, dtypes and shapes");
    assert_eq!(a.header().len(), 26, "features.* only");
    for k in a.header().keys() {
        let (x, y) = (a.tensor(k).unwrap(), b.tensor(k).unwrap());
        assert!(x.equal(&y), "{k} differs");
        // The random-init path draws biases (torchvision's are 0), so a dropped bias would show.
        if k.ends_with(".bias") {
            assert!(scalar(&x.abs().max()) > 0.0, "{k} is zero");
        }
    }
    let layers = [3, 8, 15];
    let load = |f: &str| Vgg16Features::load(f.as_ref(), Device::Cpu, &layers).unwrap();
    let (va, vb) = (load(&direct), load(&converted));
    let x = promptir::model::with_global_rng(|| {
        tch::manual_seed(0);
        Tensor::rand([1, 3, 32, 32], tch::kind::FLOAT_CPU)
    });
    let (fa, fb) = tch::no_grad(|| (va.forward(&x), vb.forward(&x)));
    assert_eq!(fa.len(), 3);
    for (u, v) in fa.iter().zip(&fb) {
        assert!(u.equal(v));
    }

    // Bad input: one line naming the file and what is wrong, exit 2, nothing written.
    let out = p("bad.safetensors");
    // The bad files, written by one python (each start costs seconds).
    crate::common::run_python(&[
        "-c",
        "import sys, torch, torchvision; d = sys.argv[1]; \
         torch.save([1, 2], f'{d}/list.pth'); \
         torch.save({'features.0.weight': torch.zeros(64, 3, 3, 3)}, f'{d}/partial.pth'); \
         f = torchvision.models.vgg16(weights=None).features.to('meta'); \
         sd = {f'features.{k}': torch.zeros(v.shape) for k, v in f.state_dict().items()}; \
         sd['features.2.weight'] = torch.zeros(64, 64, 5, 5); torch.save(sd, f'{d}/shape.pth')",
        t.path().to_str().unwrap(),
    ]);
    let garbage = p("garbage.pth");
    std::fs::write(&garbage, b"not a pickle").unwrap();
    let cases = [
        (p("missing.pth"), vec!["missing.pth", "no such file", "~/.cache/torch/hub/checkpoints/"]),
        (garbage, vec!["garbage.pth", "not a torch.save'd state dict"]),
        (p("list.pth"), vec!["list.pth", "holds a list"]),
        (p("partial.pth"), vec!["partial.pth", "25 features.* keys missing (features.0.bias"]),
        (
            p("shape.pth"),
            vec!["shape.pth", "mis-shaped features.2.weight (64, 64, 5, 5) (want (64, 64, 3, 3))"],
        ),
    ];
    // Side by side: each is a python start of a few seconds.
    let outcomes: Vec<(Option<i32>, String)> = std::thread::scope(|s| {
        let runs: Vec<_> = cases
            .iter()
            .map(|(src, _)| s.spawn(|| export_vgg(&["--from-pth", src, "--output", &out])))
            .collect();
        runs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for ((_, needles), (code, err)) in cases.iter().zip(outcomes) {
        assert_eq!((code, err.trim_end().lines().count()), (Some(2), 1), "{err}");
        for n in needles {
            assert!(err.contains(n), "{n:?} not in {err:?}");
        }
    }
    assert!(!std::path::Path::new(&out).exists());
}
