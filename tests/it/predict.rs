//! `promptir predict` end to end: the binary on tiny random checkpoints, its pred.npz read back
//! by numpy (scripts/check_pred.py) and compared with PNGs and with the library's own numbers.

use promptir::infer::Restore;
use promptir::infer::Tiled;
use promptir::infer::{Dihedral, Tta, TtaMode};
use promptir::io as checkpoint;
use promptir::io::{to_u8_chw, RgbImage};
use promptir::model::Network;
use serde_json::Value;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::Path;
use tch::{Device, Tensor};

use crate::common::{checkpoint_at, ok, ok_printed, on_cpu, user_error};

/// Deterministic noise images (`name`, height, width) in `dir`; jpg names are JPEG-encoded.
fn images_at(dir: &Path, specs: &[(&str, usize, usize)]) {
    std::fs::create_dir_all(dir).unwrap();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    for &(name, h, w) in specs {
        let hwc: Vec<u8> = (0..h * w * 3)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 56) as u8
            })
            .collect();
        let path = dir.join(name);
        if name.ends_with(".jpg") {
            image::save_buffer(&path, &hwc, w as u32, h as u32, image::ExtendedColorType::Rgb8)
                .unwrap();
        } else {
            RgbImage { width: w, height: h, hwc }.save_png(&path).unwrap();
        }
    }
}

/// Runs scripts/check_pred.py; returns its JSON report and the arrays' bytes by key.
fn numpy_read(npz: &Path, png_dir: Option<&Path>) -> (Value, BTreeMap<String, Vec<u8>>) {
    let dump = npz.with_extension("dump");
    let script = crate::common::repo().join("scripts/check_pred.py");
    let mut args = vec![script.to_str().unwrap(), npz.to_str().unwrap()];
    args.extend(["--dump", dump.to_str().unwrap()]);
    if let Some(p) = png_dir {
        args.extend(["--png-dir", p.to_str().unwrap()]);
    }
    let report: Value = serde_json::from_str(&crate::common::run_python(&args)).unwrap();
    let mut bytes = BTreeMap::new();
    for k in report["keys"].as_array().unwrap() {
        let k = k.as_str().unwrap();
        bytes.insert(k.to_string(), std::fs::read(dump.join(format!("{k}.bin"))).unwrap());
    }
    (report, bytes)
}

fn load(path: &Path) -> Network {
    checkpoint::load_model(path, Device::Cpu).unwrap().model
}

fn input(dir: &Path, name: &str) -> Tensor {
    RgbImage::load(&dir.join(name)).unwrap().to_tensor().unsqueeze(0)
}

fn quantise(y: &Tensor) -> Vec<u8> {
    to_u8_chw(&y.squeeze_dim(0))
}

const SPECS: [(&str, usize, usize); 4] =
    [("0.png", 24, 40), ("1.png", 25, 37), ("10.png", 19, 33), ("7.jpg", 16, 24)];

#[test]
fn npz_has_np_savez_layout_and_equals_pngs_and_the_model() {
    let t = tempfile::tempdir().unwrap();
    let (inp, png) = (t.path().join("in"), t.path().join("png"));
    images_at(&inp, &SPECS);
    let w = checkpoint_at(t.path(), "a.safetensors", 1);
    let npz = t.path().join("pred.npz");
    ok(on_cpu(
        "predict",
        &[&"--weights", &w, &"--input", &inp, &"--output", &npz, &"--png-dir", &png],
    ));

    let (report, bytes) = numpy_read(&npz, Some(&png));
    let keys: Vec<&str> =
        report["keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap()).collect();
    assert_eq!(keys, ["0.png", "1.png", "7.jpg", "10.png"]);
    let model = load(&w);
    for (name, h, w) in SPECS {
        let e = &report["entries"][name];
        assert_eq!(e["dtype"], "uint8");
        assert_eq!(e["shape"], serde_json::json!([3, h, w]), "{name}");
        assert_eq!(report["png_equal"][name], true, "{name}: PNG differs from the npz");
        // An ensemble of one checkpoint is that checkpoint, bit for bit.
        let expect = tch::no_grad(|| quantise(&model.restore(&input(&inp, name))));
        assert!(bytes[name] == expect, "{name}: npz differs from the model's own output");
    }
    for (entry, method) in report["zip"].as_array().unwrap().iter().map(|e| (&e[0], &e[1])) {
        assert_eq!(method, "stored", "{entry}");
    }
    assert_eq!(report["zip"][0][0], "0.png.npy");
    assert!(png.join("7.png").exists());
}

#[test]
fn two_checkpoints_average_their_float_outputs() {
    let t = tempfile::tempdir().unwrap();
    let inp = t.path().join("in");
    images_at(&inp, &SPECS[..2]);
    let (a, b) = (checkpoint_at(t.path(), "a.st", 1), checkpoint_at(t.path(), "b.st", 2));
    let npz = t.path().join("pred.npz");
    ok(on_cpu("predict", &[&"--weights", &a, &"--weights", &b, &"--input", &inp, &"-o", &npz]));
    let (_, bytes) = numpy_read(&npz, None);
    let (ma, mb) = (load(&a), load(&b));
    for (name, _, _) in &SPECS[..2] {
        let x = input(&inp, name);
        let (ya, yb) = tch::no_grad(|| (ma.restore(&x), mb.restore(&x)));
        let expect = quantise(&((&ya + &yb) / 2.0));
        assert!(bytes[*name] == expect, "{name}: not the mean of the two models");
        // Not trivially satisfied: the mean is neither model alone.
        assert!(expect != quantise(&ya) && expect != quantise(&yb));
    }
}

#[test]
fn tta_is_the_mean_over_the_eight_transforms() {
    let t = tempfile::tempdir().unwrap();
    let inp = t.path().join("in");
    images_at(&inp, &SPECS[1..2]); // 25x37: non-square, so transposed views are padded differently
    let w = checkpoint_at(t.path(), "a.st", 3);
    let npz = t.path().join("pred.npz");
    let out = ok(on_cpu(
        "predict",
        &[&"--weights", &w, &"--input", &inp, &"--output", &npz, &"--tta", &"8"],
    ));
    assert!(out.contains("tta 8: id, rot90, rot180"), "{out}");
    let (_, bytes) = numpy_read(&npz, None);
    let got = &bytes["1.png"];

    let model = load(&w);
    let x = input(&inp, "1.png");
    let (plain, explicit, lib) = tch::no_grad(|| {
        let mut sum = Tensor::zeros_like(&x);
        for d in Dihedral::ALL {
            sum += d.invert(&model.restore(&d.apply(&x)));
        }
        (model.restore(&x), sum / 8.0, Tta::new(&model, &Dihedral::ALL).restore(&x))
    });
    assert!(f64::try_from((&lib - &explicit).abs().max()).unwrap() < 1e-6);
    // The binary runs the library path exactly; the independently summed mean can only differ
    // at rounding ties (by one level).
    assert!(*got == quantise(&lib));
    let e = quantise(&explicit);
    assert!(got.iter().zip(&e).all(|(a, b)| a.abs_diff(*b) <= 1));
    let changed = got.iter().zip(quantise(&plain)).filter(|(a, b)| **a != *b).count();
    assert!(changed * 10 > got.len(), "TTA changed only {changed} of {} values", got.len());
}

#[test]
fn tta_modes_average_their_views_and_parse() {
    let t = tempfile::tempdir().unwrap();
    let inp = t.path().join("in");
    images_at(&inp, &SPECS[1..2]);
    let w = checkpoint_at(t.path(), "a.st", 3);
    let run = |mode: &str| {
        let npz = t.path().join(format!("pred_{mode}.npz"));
        let a: &[&dyn AsRef<OsStr>] =
            &[&"--weights", &w, &"--input", &inp, &"--output", &npz, &"--tta", &mode];
        let printed = ok_printed(on_cpu("predict", a));
        (numpy_read(&npz, None).1.remove("1.png").unwrap(), printed)
    };
    let model = load(&w);
    let x = input(&inp, "1.png");
    let flips_views = TtaMode::Flips.fixed_views().unwrap();
    let (lib_flips, lib_eight) = tch::no_grad(|| {
        (Tta::new(&model, &flips_views).restore(&x), Tta::new(&model, &Dihedral::ALL).restore(&x))
    });
    let (flips, out) = run("flips");
    assert!(out.contains("tta flips: id, rot180, hflip, vflip"), "{out}");
    assert!(flips == quantise(&lib_flips));
    let (eight, _) = run("8");
    // A random network is not equivariant: 4 views and 8 views give different images.
    let differ = flips.iter().zip(&eight).filter(|(a, b)| a != b).count();
    assert!(differ * 10 > flips.len(), "flips and 8 differ in only {differ} values");
    assert!(eight == quantise(&lib_eight));
    // A checkpoint without a training record: auto is the 8 views, with a note why.
    let (auto, out) = run("auto");
    assert!(auto == eight && out.contains("tta auto: id, rot90"), "{out}");
    assert!(out.contains("note: ") && out.contains("a.st: no record"), "{out}");
    // A bare --tta (what early scripts wrote) is auto.
    let bare = t.path().join("pred_bare.npz");
    let a: &[&dyn AsRef<OsStr>] =
        &[&"--weights", &w, &"--input", &inp, &"--output", &bare, &"--tta"];
    let out = ok(on_cpu("predict", a));
    assert!(numpy_read(&bare, None).1.remove("1.png").unwrap() == auto);
    assert!(out.contains("tta auto: id, rot90"), "{out}");
    let (off, out) = run("off");
    assert!(off == quantise(&tch::no_grad(|| model.restore(&x))) && out.contains("tta off: id"));

    // An unknown mode is named, with the valid ones.
    let npz = t.path().join("bad.npz");
    let needle = "invalid value 'on' for '--tta [<MODE>]'";
    let a: &[&dyn AsRef<OsStr>] =
        &[&"--weights", &w, &"--input", &inp, &"--output", &npz, &"--tta", &"on"];
    let e = user_error(&on_cpu("predict", a));
    assert!(e.contains(needle) && e.contains("off, 8, flips, auto"), "{e}");
    assert!(!npz.exists());
}

#[test]
fn tiled_prediction_equals_the_library_tiling() {
    let t = tempfile::tempdir().unwrap();
    let inp = t.path().join("in");
    images_at(&inp, &[("0.png", 40, 70)]);
    let w = checkpoint_at(t.path(), "a.st", 4);
    let npz = t.path().join("pred.npz");
    let args: &[&dyn AsRef<OsStr>] = &[
        &"--weights",
        &w,
        &"--input",
        &inp,
        &"--output",
        &npz,
        &"--tile",
        &"32",
        &"--tile-overlap",
        &"8",
    ];
    ok(on_cpu("predict", args));
    let (report, bytes) = numpy_read(&npz, None);
    assert_eq!(report["entries"]["0.png"]["shape"], serde_json::json!([3, 40, 70]));
    let model = load(&w);
    let x = input(&inp, "0.png");
    let (tiled, full) =
        tch::no_grad(|| (Tiled::new(&model, 32, 8).unwrap().restore(&x), model.restore(&x)));
    assert!(bytes["0.png"] == quantise(&tiled));
    assert!(bytes["0.png"] != quantise(&full), "--tile had no effect");
}

/// Runs predict expecting a user error mentioning every `needles`, and no output at all.
fn assert_fails(args: &[&dyn AsRef<OsStr>], npz: &Path, png: &Path, needles: &[&str]) {
    let err = user_error(&on_cpu("predict", args));
    for n in needles {
        assert!(err.contains(n), "{n:?} not in {err:?}");
    }
    assert!(!npz.exists() && !png.exists(), "partial output after: {err}");
}

#[test]
fn user_errors_name_the_problem_and_write_nothing() {
    let t = tempfile::tempdir().unwrap();
    let (inp, png, npz) = (t.path().join("in"), t.path().join("png"), t.path().join("pred.npz"));
    images_at(&inp, &SPECS[..2]);
    let w = checkpoint_at(t.path(), "a.st", 1);
    let base = |input: &Path, weights: &Path, output: &Path| {
        let v: Vec<Box<dyn AsRef<OsStr>>> = vec![
            Box::new("--weights"),
            Box::new(weights.to_path_buf()),
            Box::new("--input"),
            Box::new(input.to_path_buf()),
            Box::new("--output"),
            Box::new(output.to_path_buf()),
            Box::new("--png-dir"),
            Box::new(png.clone()),
        ];
        v
    };
    let run = |input: &Path, weights: &Path, output: &Path, needles: &[&str]| {
        let v = base(input, weights, output);
        let refs: Vec<&dyn AsRef<OsStr>> = v.iter().map(|b| b.as_ref()).collect();
        assert_fails(&refs, &npz, &png, needles);
    };

    run(&t.path().join("missing"), &w, &npz, &["missing", "input folder does not exist"]);
    let empty = t.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(empty.join("notes.txt"), "not an image").unwrap();
    run(&empty, &w, &npz, &["empty", "no .png/.jpg/.jpeg images"]);
    let other = t.path().join("model.ckpt");
    std::fs::write(&other, b"PK\x03\x04 a pickled checkpoint").unwrap();
    run(&inp, &other, &npz, &["model.ckpt", "not a readable safetensors file", "promptir import"]);
    run(&inp, &w, &t.path().join("no/such/dir/pred.npz"), &["output folder does not exist"]);
    // sysfs refuses new files even to root, which chmod cannot do.
    run(&inp, &w, Path::new("/sys/pred.npz"), &["/sys", "output folder is not writable"]);
    // Last: a corrupt file among good ones is named, and the good ones are not written either.
    std::fs::write(inp.join("5.png"), b"\x89PNG\r\n\x1a\n truncated").unwrap();
    run(&inp, &w, &npz, &["5.png", "not a readable image"]);
}
