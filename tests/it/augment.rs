//! Augmentation against scipy/torchvision (scripts/reference/augment_ref.py): small-angle
//! rotation with mirrored borders, colour jitter, Gaussian blur.

use crate::common::{max_abs_diff, run_python};
use promptir::data::augment::{self, blur_radius, Jitter, Planes};
use promptir::io::RgbImage;
use tch::Tensor;

fn tensor(p: &Planes) -> Tensor {
    Tensor::from_slice(&p.data).view([3, p.height as i64, p.width as i64])
}

#[test]
fn rotation_jitter_and_blur_match_scipy_and_torchvision() {
    let (h, w) = (40usize, 48usize);
    let hwc: Vec<u8> = (0..h * w * 3).map(|i| ((i * i * 7 + i * 13) % 251) as u8).collect();
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("src.png");
    RgbImage { width: w, height: h, hwc: hwc.clone() }.save_png(&png).unwrap();

    // (cy, cx, degrees): inside the image, past the top-left corner (mirrored), large angles.
    let rotations = [(19.5, 23.5, 12.5), (3.0, 4.25, -30.0), (30.0, 40.0, 75.0), (10.0, 10.0, 0.0)];
    let size = 24;
    let (top, left, crop) = (5, 7, 20);
    let jitter = Jitter { brightness: 1.2, contrast: 0.75, saturation: 1.3 };
    let sigma = 0.9;
    let kernel = 2 * blur_radius(sigma, crop) + 1;
    let rot_json: Vec<String> = rotations
        .iter()
        .map(|(cy, cx, d)| format!(r#"{{"cy":{cy},"cx":{cx},"degrees":{d},"size":{size}}}"#))
        .collect();
    let params = format!(
        r#"{{"rotate":[{}],"crop":{{"top":{top},"left":{left},"size":{crop}}},
        "jitter":{{"brightness":{},"contrast":{},"saturation":{}}},
        "blur":{{"sigma":{sigma},"kernel":{kernel}}}}}"#,
        rot_json.join(","),
        jitter.brightness,
        jitter.contrast,
        jitter.saturation
    );
    let out = dir.path().join("ref.safetensors");
    run_python(&[
        "scripts/reference/augment_ref.py",
        png.to_str().unwrap(),
        out.to_str().unwrap(),
        &params,
    ]);
    let reference: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(&out).unwrap().into_iter().collect();

    for (i, &(cy, cx, d)) in rotations.iter().enumerate() {
        let got = augment::rotated_crop(&hwc, h, w, cy, cx, d, size);
        let diff = max_abs_diff(&tensor(&got), &reference[&format!("rotate.{i}")]);
        println!("rotation {i} ({d} deg): max |diff| = {diff:.2e}");
        assert!(diff < 2e-6, "rotation {i}: {diff}");
    }

    let base = augment::crop(&hwc, w, top, left, crop);
    let (mut degraded, mut clean) = (base.clone(), base.clone());
    augment::color_jitter(&mut degraded, &mut clean, jitter);
    let diff = max_abs_diff(&tensor(&clean), &reference["jitter"]);
    println!("jitter: max |diff| = {diff:.2e}");
    assert!(diff < 2e-6, "jitter: {diff}");
    assert_eq!(degraded, clean);

    let blurred = augment::gaussian_blur(&base, sigma);
    let diff = max_abs_diff(&tensor(&blurred), &reference["blur"]);
    println!("blur (kernel {kernel}): max |diff| = {diff:.2e}");
    assert!(diff < 2e-6, "blur: {diff}");
}
