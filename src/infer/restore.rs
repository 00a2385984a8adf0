//! The one forward path. Training validation, `eval`, `predict` and `visualize` all call
//! [`Restore::restore`]; padding, test-time augmentation, checkpoint ensembles and tiling are
//! wrappers around it, never copies of the loop.

use super::dihedral::Dihedral;
use crate::model::Network;
use tch::{nn::Module, Tensor};

/// (B, 3, H, W) in [0, 1] -> (B, 3, H, W), any H and W. The output is **not** clamped: losses see
/// the raw output, and clamping happens only where images are quantised (`io::to_u8_chw`).
pub trait Restore {
    fn restore(&self, x: &Tensor) -> Tensor;
}

/// Runs `f` on `x` reflect-padded (right/bottom) to a multiple of `m`, and crops back.
pub fn padded(x: &Tensor, m: i64, f: impl Fn(&Tensor) -> Tensor) -> Tensor {
    let (h, w) = (x.size()[2], x.size()[3]);
    let (ph, pw) = ((m - h % m) % m, (m - w % m) % m);
    if ph == 0 && pw == 0 {
        return f(x);
    }
    // Reflection needs the pad to be smaller than the side; tiny inputs fall back to replicate.
    let mode = if ph < h && pw < w { "reflect" } else { "replicate" };
    let xp = x.pad([0, pw, 0, ph], mode, None);
    f(&xp).narrow(2, 0, h).narrow(3, 0, w)
}

impl Restore for Network {
    fn restore(&self, x: &Tensor) -> Tensor {
        padded(x, self.pad_multiple(), |x| self.forward(x))
    }
}

impl<R: Restore + ?Sized> Restore for &R {
    fn restore(&self, x: &Tensor) -> Tensor {
        (**self).restore(x)
    }
}

impl<R: Restore + ?Sized> Restore for Box<R> {
    fn restore(&self, x: &Tensor) -> Tensor {
        (**self).restore(x)
    }
}

/// Mean of equally shaped tensors, summed as a balanced tree: for 2^k equal inputs every partial
/// sum is exact, so TTA around an identity gives back its input bit for bit.
pub fn mean(mut ts: Vec<Tensor>) -> Tensor {
    let n = ts.len();
    assert!(n > 0, "mean of no tensors");
    while ts.len() > 1 {
        let mut next = Vec::with_capacity(ts.len().div_ceil(2));
        let mut it = ts.into_iter();
        while let Some(a) = it.next() {
            next.push(match it.next() {
                Some(b) => a + b,
                None => a,
            });
        }
        ts = next;
    }
    ts.pop().expect("one left") / n as f64
}

/// Dihedral test-time augmentation over a set of views: transform, restore, invert, average in
/// float. Which views is [`super::TtaPlan`]'s choice.
pub struct Tta<R> {
    inner: R,
    views: Vec<Dihedral>,
}

impl<R> Tta<R> {
    pub fn new(inner: R, views: &[Dihedral]) -> Self {
        assert!(!views.is_empty(), "TTA needs at least one view");
        Tta { inner, views: views.to_vec() }
    }

    pub fn views(&self) -> &[Dihedral] {
        &self.views
    }
}

impl<R: Restore> Restore for Tta<R> {
    fn restore(&self, x: &Tensor) -> Tensor {
        mean(self.views.iter().map(|d| d.invert(&self.inner.restore(&d.apply(x)))).collect())
    }
}

/// Several models' outputs averaged (a checkpoint ensemble).
pub struct Ensemble<R>(pub Vec<R>);

impl<R: Restore> Restore for Ensemble<R> {
    fn restore(&self, x: &Tensor) -> Tensor {
        assert!(!self.0.is_empty(), "an ensemble needs at least one model");
        mean(self.0.iter().map(|m| m.restore(x)).collect())
    }
}

/// Any closure is a restorer (tests use the identity and simple maps).
pub struct FnRestore<F>(pub F);

impl<F: Fn(&Tensor) -> Tensor> Restore for FnRestore<F> {
    fn restore(&self, x: &Tensor) -> Tensor {
        (self.0)(x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::TtaMode;
    use tch::{Device, Kind};

    fn rand(shape: &[i64]) -> Tensor {
        crate::model::with_global_rng(|| {
            tch::manual_seed(0);
            Tensor::rand(shape, (Kind::Float, Device::Cpu))
        })
    }

    #[test]
    fn tta_of_identity_is_bit_exact() {
        let x = rand(&[1, 3, 10, 13]);
        for views in
            [&Dihedral::ALL[..], &TtaMode::Flips.fixed_views().unwrap(), &[Dihedral::HFLIP]]
        {
            let y = Tta::new(FnRestore(|t: &Tensor| t.shallow_clone()), views).restore(&x);
            assert!(y.equal(&x));
        }
    }

    #[test]
    fn tta_averages_position_dependent_outputs() {
        // A model that adds a ramp along W is not equivariant: TTA must average the 8 views.
        let x = Tensor::zeros([1, 1, 4, 4], (Kind::Float, Device::Cpu));
        let ramp = |t: &Tensor| t + Tensor::arange(t.size()[3], (Kind::Float, Device::Cpu));
        let y = Tta::new(FnRestore(ramp), &Dihedral::ALL).restore(&x);
        // Each pixel averages its column index under the 4 transforms that keep W as W
        // (ramps j or 3-j) and its row index under the 4 that swap axes: the mean is 1.5 everywhere.
        assert!(y.allclose(
            &Tensor::full([1, 1, 4, 4], 1.5, (Kind::Float, Device::Cpu)),
            1e-6,
            1e-6,
            false
        ));
    }

    #[test]
    fn flips_and_eight_differ_for_a_model_that_is_not_equivariant() {
        // Adds j^2 along W (a linear ramp would average to a constant under flips alone).
        let x = Tensor::zeros([1, 1, 4, 4], (Kind::Float, Device::Cpu));
        let sq = |t: &Tensor| {
            let j = Tensor::arange(t.size()[3], (Kind::Float, Device::Cpu));
            t + &j * &j
        };
        let flips = Tta::new(FnRestore(sq), &TtaMode::Flips.fixed_views().unwrap()).restore(&x);
        let eight = Tta::new(FnRestore(sq), &Dihedral::ALL).restore(&x);
        // Flips: each column j averages j^2 and (3-j)^2; rows stay constant.
        let col = Tensor::from_slice(&[4.5f32, 2.5, 2.5, 4.5]).view([1, 1, 1, 4]);
        assert!(flips.allclose(&col.expand([1, 1, 4, 4], false), 1e-6, 1e-6, false));
        // 8 views: half of them turn the ramp into one along H, so the mean is (col + row) / 2.
        let want = (&col + col.view([1, 1, 4, 1])) / 2.0;
        assert!(eight.allclose(&want, 1e-6, 1e-6, false));
        assert!(!flips.allclose(&eight, 1e-3, 1e-3, false));
    }

    #[test]
    fn ensemble_is_the_mean() {
        let x = rand(&[1, 3, 8, 8]);
        let one = Ensemble(vec![FnRestore(|t: &Tensor| t * 2.0)]).restore(&x);
        assert!(one.equal(&(&x * 2.0)));
        let a = |t: &Tensor| t * 2.0;
        let b = |t: &Tensor| t * 4.0;
        let two =
            Ensemble(vec![Box::new(FnRestore(a)) as Box<dyn Restore>, Box::new(FnRestore(b))])
                .restore(&x);
        assert!(two.allclose(&(&x * 3.0), 1e-6, 1e-6, false));
    }

    #[test]
    fn padding_crops_back_to_odd_sizes() {
        let x = rand(&[1, 3, 25, 30]);
        let y = padded(&x, 8, |t| {
            assert_eq!(t.size(), [1, 3, 32, 32]);
            t.shallow_clone()
        });
        assert!(y.equal(&x));
        // Smaller than the pad: replicate instead of failing.
        let tiny = rand(&[1, 3, 3, 5]);
        assert!(padded(&tiny, 8, |t| t.shallow_clone()).equal(&tiny));
    }
}
