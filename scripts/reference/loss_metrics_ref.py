"""Writes the Python side of tests/loss_metrics.rs into a folder.

    python scripts/reference/loss_metrics_ref.py OUT_DIR

- metrics.safetensors: u8 image pairs (`pred.i`, `gt.i`, CHW) with scikit-image's
  peak_signal_noise_ratio(gt, pred, data_range=255) and structural_similarity(gt, pred,
  data_range=255, channel_axis=-1) in the metadata (`cases`, JSON).
- conventions.safetensors: float outputs (`pred.i`, CHW, unclamped) and u8 ground truths (`gt.i`)
  with each `eval --metric` convention's PSNR and SSIM from scikit-image (`cases`): course (the
  rounded u8 output as above), rgb (PromptIR's test.py: both clipped to [0, 1] in float, data
  range 1, channel_axis=-1) and y (BasicSR's test_y_channel: the rounded output's
  16 + 65.481 R + 128.553 G + 24.966 B in float, data range 255, SSIM with gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False).
- ssim_loss.safetensors: float pairs (`pred.i`, `target.i`), pytorch_msssim.ssim(pred, target,
  data_range=1, size_average=True) in the metadata and `grad.i`, the autograd gradient of
  1 - ssim with respect to pred.
- vgg16_random.safetensors: random-init VGG16 features written by scripts/export_vgg16.py.
- vgg.safetensors: `pred`, `target`, torchvision's outputs `feat.N` of `features.N` for pred, the
  perceptual distances (mean over layers of the per-layer L1 / MSE) and one full weighted loss
  with its gradient `grad.total` with respect to pred.
- terms.safetensors: every loss term of src/train/loss/terms.rs (values in the metadata,
  gradients `grad.<key>`) on one pair, and their weighted sum (`total`, `grad.total`).
"""
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import torch
import torch.nn.functional as F
import torchvision
from pytorch_msssim import ssim
from safetensors.torch import load_file, save_file
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

HERE = os.path.dirname(os.path.abspath(__file__))
EXPORT = os.path.join(HERE, "..", "export_vgg16.py")
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def metrics(out, rng):
    def structured(c, h, w):
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([128 + 100 * np.sin(xx / (3 + k) + yy / (5 + 2 * k)) for k in range(c)])
        return np.clip(base + rng.normal(0, 10, base.shape), 0, 255).round().astype(np.uint8)

    def noisy(gt, sigma):
        return np.clip(gt + rng.normal(0, sigma, gt.shape), 0, 255).round().astype(np.uint8)

    pairs = []
    gt = rng.integers(0, 256, (3, 40, 56), dtype=np.uint8)
    pairs.append((rng.integers(0, 256, gt.shape, dtype=np.uint8), gt))  # unrelated noise
    gt = structured(3, 33, 47)
    pairs.append((noisy(gt, 8), gt))  # odd, non-square
    gt = structured(3, 64, 48)
    pred = gt.copy()
    pred[1, 10:13, 20:22] ^= 1  # nearly identical
    pairs.append((pred, gt))
    gt = structured(3, 7, 9)
    pairs.append((noisy(gt, 20), gt))  # exactly one window tall
    gt = structured(3, 96, 80)
    pairs.append((noisy(gt, 3), gt))
    gt = structured(1, 20, 31)
    pairs.append((noisy(gt, 15), gt))  # one channel

    tensors, cases = {}, []
    for i, (pred, gt) in enumerate(pairs):

        def hwc(a):
            return np.ascontiguousarray(a.transpose(1, 2, 0))

        cases.append(dict(
            h=gt.shape[1], w=gt.shape[2],
            psnr=float(peak_signal_noise_ratio(hwc(gt), hwc(pred), data_range=255)),
            ssim=float(structural_similarity(hwc(gt), hwc(pred), data_range=255, channel_axis=-1)),
        ))
        tensors[f"pred.{i}"] = torch.from_numpy(pred.copy())
        tensors[f"gt.{i}"] = torch.from_numpy(gt.copy())
    save_file(tensors, os.path.join(out, "metrics.safetensors"), metadata={"cases": json.dumps(cases)})


def conventions(out, rng):
    def u8(pred):  # as src/io/image.rs rounds: clamp, times 255 and round half to even in float32
        return np.round(np.clip(pred, 0, 1).astype(np.float32) * np.float32(255)).astype(np.uint8)

    def luma(img8):
        rgb = img8.astype(np.float64) / 255.0
        return 16.0 + 65.481 * rgb[0] + 128.553 * rgb[1] + 24.966 * rgb[2]

    def hwc(a):
        return np.ascontiguousarray(np.moveaxis(a, 0, -1))

    tensors, cases = {}, []
    for i, (h, w, sigma) in enumerate([(40, 56, 0.05), (33, 47, 0.2), (11, 13, 0.02), (64, 48, 0.1)]):
        yy, xx = np.mgrid[0:h, 0:w]
        gt = np.stack([128 + 100 * np.sin(xx / (3 + k) + yy / (5 + 2 * k)) for k in range(3)])
        gt = np.clip(gt, 0, 255).round().astype(np.uint8)
        # Outputs a little outside [0, 1], as a network's are before clamping.
        pred = (gt / 255.0 + rng.normal(0, sigma, gt.shape)).astype(np.float32)
        g, p = gt.astype(np.float64) / 255.0, np.clip(pred.astype(np.float64), 0, 1)
        p8 = u8(pred)
        ly, lg = luma(p8), luma(gt)
        cases.append(dict(
            h=h, w=w,
            course=[float(peak_signal_noise_ratio(hwc(gt), hwc(p8), data_range=255)),
                    float(structural_similarity(hwc(gt), hwc(p8), data_range=255, channel_axis=-1))],
            rgb=[float(peak_signal_noise_ratio(hwc(g), hwc(p), data_range=1)),
                 float(structural_similarity(hwc(g), hwc(p), data_range=1, channel_axis=-1))],
            y=[float(peak_signal_noise_ratio(lg, ly, data_range=255)),
               float(structural_similarity(lg, ly, data_range=255, gaussian_weights=True, sigma=1.5,
                                           use_sample_covariance=False))],
        ))
        tensors[f"pred.{i}"] = torch.from_numpy(pred.copy())
        tensors[f"gt.{i}"] = torch.from_numpy(gt.copy())
    save_file(tensors, os.path.join(out, "conventions.safetensors"), metadata={"cases": json.dumps(cases)})


def ssim_loss(out):
    torch.manual_seed(1)
    tensors, values = {}, []
    for i, shape in enumerate([(2, 3, 48, 48), (1, 3, 40, 29), (1, 3, 8, 20)]):
        target = torch.rand(shape)
        # Raw network output: partly outside [0, 1], never clamped.
        pred = (target + 0.15 * torch.randn(shape)).requires_grad_(True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pytorch_msssim warns when it skips a short side
            s = ssim(pred, target, data_range=1, size_average=True)
        (1 - s).backward()
        values.append(float(s.detach()))
        tensors[f"pred.{i}"], tensors[f"target.{i}"] = pred.detach(), target
        tensors[f"grad.{i}"] = pred.grad
    save_file(tensors, os.path.join(out, "ssim_loss.safetensors"), metadata={"ssim": json.dumps(values)})


def vgg_features(features, x, layers):
    """Outputs of features.N for N in layers (a clone: torchvision's ReLUs work in place)."""
    h, outs = (x - MEAN) / STD, {}
    for i, m in enumerate(features):
        h = m(h)
        if i in layers:
            outs[i] = h.clone()
        if i == max(layers):
            break
    return [outs[i] for i in layers]


def perceptual(features, pred, target, layers, dist):
    fp = vgg_features(features, pred, layers)
    with torch.no_grad():
        ft = vgg_features(features, target, layers)
    d = F.l1_loss if dist == "l1" else F.mse_loss
    return sum(d(a, b) for a, b in zip(fp, ft)) / len(layers)


def vgg(out):
    weights = os.path.join(out, "vgg16_random.safetensors")
    subprocess.run([sys.executable, EXPORT, "--random-init", "--seed", "3", "--output", weights], check=True)
    features = torchvision.models.vgg16(weights=None).features.eval()
    sd = {k.removeprefix("features."): v for k, v in load_file(weights).items()}
    features.load_state_dict(sd, strict=True)
    for p in features.parameters():
        p.requires_grad_(False)

    torch.manual_seed(2)
    target = torch.rand(2, 3, 48, 48)
    pred = target + 0.1 * torch.randn(target.shape)
    feat_layers, loss_layers = [3, 8, 15, 22], [3, 8, 15]
    tensors = {"pred": pred, "target": target}
    with torch.no_grad():
        for n, f in zip(feat_layers, vgg_features(features, pred, feat_layers)):
            tensors[f"feat.{n}"] = f.contiguous()
        values = {f"perceptual_{d}": float(perceptual(features, pred, target, loss_layers, d)) for d in ("l1", "l2")}

    # The full loss as configured by {l1: 1, ssim: 0.2, perceptual: 0.05, layers [3, 8, 15], l1}.
    x = pred.clone().requires_grad_(True)
    l1 = F.l1_loss(x, target)
    s = 1 - ssim(x, target, data_range=1, size_average=True)
    p = perceptual(features, x, target, loss_layers, "l1")
    total = 1.0 * l1 + 0.2 * s + 0.05 * p
    total.backward()
    values.update(l1=float(l1), ssim=float(s), perceptual=float(p), total=float(total))
    tensors["grad.total"] = x.grad
    meta = dict(values, feat_layers=feat_layers, loss_layers=loss_layers)
    save_file(tensors, os.path.join(out, "vgg.safetensors"), metadata={"values": json.dumps(meta)})
    return features


SOBEL_X = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def sobel(x):
    c = x.shape[1]
    kx = SOBEL_X.view(1, 1, 3, 3).repeat(c, 1, 1, 1)
    ky = SOBEL_X.t().contiguous().view(1, 1, 3, 3).repeat(c, 1, 1, 1)
    return F.conv2d(x, kx, groups=c), F.conv2d(x, ky, groups=c)


def terms_of(features):
    """Each term by its key in src/train/loss/terms.rs, unweighted, of (pred, target)."""
    return {
        "l1": lambda p, t: F.l1_loss(p, t),
        "ssim": lambda p, t: 1 - ssim(p, t, data_range=1, size_average=True),
        # relu1_2, relu2_2, relu3_3, L1 (the config's defaults)
        "perceptual": lambda p, t: perceptual(features, p, t, [3, 8, 15], "l1"),
        # sqrt(d^2 + eps^2), eps 1e-3 (MPRNet's CharbonnierLoss)
        "charbonnier": lambda p, t: torch.sqrt((p - t) ** 2 + 1e-6).mean(),
        # L1 of the 3x3 Sobel responses (valid, per channel), the mean of both directions
        "edge": lambda p, t: sum((a - b).abs().mean() for a, b in zip(sobel(p), sobel(t))) / 2,
        # L1 of the orthonormal 2-D real FFT's complex values (real and imaginary parts)
        "fft": lambda p, t: (
            torch.view_as_real(torch.fft.rfft2(p, norm="ortho"))
            - torch.view_as_real(torch.fft.rfft2(t, norm="ortho"))
        ).abs().mean(),
        # minus the PSNR (data range 1) per image, averaged over the batch
        "psnr": lambda p, t: (10 * torch.log10(((p - t) ** 2).mean(dim=(1, 2, 3)) + 1e-8)).mean(),
    }


def terms(out, features):
    """terms.safetensors: `pred`, `target`, per term its value (metadata) and gradient
    `grad.<key>`, and a weighted sum of them all (`total`, `grad.total`)."""
    torch.manual_seed(2)
    target = torch.rand(2, 3, 24, 21)
    pred = target + 0.1 * torch.randn(target.shape)
    tensors, values = {"pred": pred, "target": target}, {}
    fns = terms_of(features)
    for name, f in fns.items():
        x = pred.clone().requires_grad_(True)
        v = f(x, target)
        v.backward()
        values[name], tensors[f"grad.{name}"] = float(v.detach()), x.grad
    weights = {"l1": 1.0, "ssim": 0.2, "perceptual": 0.05, "charbonnier": 0.5, "edge": 0.3, "fft": 0.2, "psnr": 0.01}
    x = pred.clone().requires_grad_(True)
    total = sum(weights[k] * f(x, target) for k, f in fns.items())
    total.backward()
    values.update(total=float(total.detach()), weights=weights)
    tensors["grad.total"] = x.grad
    save_file(tensors, os.path.join(out, "terms.safetensors"), metadata={"values": json.dumps(values)})


def main(out):
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(1)
    metrics(out, np.random.default_rng(0))
    conventions(out, np.random.default_rng(1))
    ssim_loss(out)
    terms(out, vgg(out))


if __name__ == "__main__":
    main(sys.argv[1])
