//! Event files written by `promptir::tensorboard`, read back by TensorBoard's EventAccumulator
//! (`scripts/reference/read_tfevents.py`).

use promptir::io::{EventWriter, SummaryWriter};
use serde_json::Value;

/// A 32x64 (H x W) image that is wrong under any transpose, flip or channel swap.
fn pattern(h: usize, w: usize) -> Vec<u8> {
    let mut hwc = Vec::with_capacity(h * w * 3);
    for y in 0..h {
        for x in 0..w {
            hwc.extend([(x * 4) as u8, (y * 8) as u8, ((x + 2 * y) as u8) ^ 0x5a]);
        }
    }
    hwc
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn tensorboard_reads_scalars_and_images() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("run");
    let started = promptir::io::unix_time();
    let (h, w) = (32, 64);
    let img = pattern(h, w);
    let lrs = [0.0, 1.4285714285714285e-5, 2e-4, 1.9396926207859084e-4];
    {
        let mut tb = EventWriter::create(&log_dir).unwrap();
        for (step, lr) in lrs.iter().enumerate() {
            let step = step as i64 * 50;
            tb.scalar("train/lr", step, *lr).unwrap();
            tb.scalar("train/loss", step, 1.0 / (step as f64 + 3.0)).unwrap();
        }
        tb.image("val/sample_0", 100, &img, h, w).unwrap();
        let dark: Vec<u8> = img.iter().map(|v| v / 2).collect();
        tb.image("val/sample_0", 200, &dark, h, w).unwrap();
        tb.flush().unwrap();
        tb.scalar("val/psnr", 200, 31.25).unwrap();
        // Dropping the writer flushes the rest.
    }
    let out = crate::common::run_python(&[
        "scripts/reference/read_tfevents.py",
        log_dir.to_str().unwrap(),
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();

    let files = v["files"].as_array().unwrap();
    assert_eq!(files.len(), 1);
    assert!(files[0].as_str().unwrap().starts_with("events.out.tfevents."), "{files:?}");
    assert_eq!(v["file_version"].as_f64(), Some(2.0));

    let scalars = v["scalars"].as_object().unwrap();
    let mut tags: Vec<&String> = scalars.keys().collect();
    tags.sort();
    assert_eq!(tags, ["train/loss", "train/lr", "val/psnr"]);
    let series = |tag: &str| -> Vec<(i64, f64, f64)> {
        scalars[tag]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e[0].as_i64().unwrap(), e[1].as_f64().unwrap(), e[2].as_f64().unwrap()))
            .collect()
    };
    let lr = series("train/lr");
    assert_eq!(lr.len(), lrs.len());
    for (i, (step, value, wall)) in lr.iter().enumerate() {
        assert_eq!(*step, i as i64 * 50);
        // Stored as f32, TensorBoard's scalar type.
        assert_eq!(*value, lrs[i] as f32 as f64, "train/lr step {step}");
        assert!(*wall >= started.floor() && *wall < started + 600.0, "wall time {wall}");
    }
    let loss = series("train/loss");
    assert_eq!(loss.iter().map(|e| e.0).collect::<Vec<_>>(), [0, 50, 100, 150]);
    assert_eq!(loss[3].1, (1.0f64 / 153.0) as f32 as f64);
    assert_eq!(series("val/psnr").iter().map(|e| (e.0, e.1)).collect::<Vec<_>>(), [(200, 31.25)]);

    let images = v["images"]["val/sample_0"].as_array().unwrap();
    assert_eq!(images.len(), 2);
    for (e, step, want) in
        [(&images[0], 100, img.clone()), (&images[1], 200, img.iter().map(|v| v / 2).collect())]
    {
        assert_eq!(e["step"].as_i64(), Some(step));
        assert_eq!((e["width"].as_u64(), e["height"].as_u64()), (Some(w as u64), Some(h as u64)));
        assert_eq!(e["format"].as_str(), Some("PNG"));
        assert_eq!(e["decoded_hw"], serde_json::json!([h, w]));
        assert_eq!(e["rgb_hex"].as_str().unwrap(), hex(&want), "pixels at step {step}");
    }
}
