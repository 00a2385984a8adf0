//! Checkpoints loaded into one [`Restore`]: the forward path `predict`, `eval` and `visualize`
//! share, composed of an ensemble, TTA and tiling only when asked.

use super::dihedral::Dihedral;
use super::restore::{Ensemble, Restore, Tta};
use super::tile::Tiled;
use crate::io::{load_model_choosing, to_u8_chw, EmaChoice, LoadedModel, RgbImage};
use crate::model::Network;
use crate::{Error, Result};
use std::path::PathBuf;
use tch::{Device, Tensor};

/// Loads every checkpoint onto `device`; each network is built from its own metadata, with the
/// weights `ema` chooses (a note names each checkpoint whose moving average is used).
pub fn load_models(
    weights: &[PathBuf],
    device: Device,
    ema: EmaChoice,
) -> Result<Vec<LoadedModel>> {
    if weights.is_empty() {
        return Err(Error::Usage("give at least one --weights checkpoint".into()));
    }
    let models: Vec<LoadedModel> =
        weights.iter().map(|w| load_model_choosing(w, device, ema)).collect::<Result<_>>()?;
    for m in models.iter().filter(|m| m.ema && ema == EmaChoice::Auto) {
        eprintln!(
            "{}: using its moving average of the weights (--ema off: the raw weights)",
            m.path.display()
        );
    }
    Ok(models)
}

/// The single forward path: `Tiled(Tta(Ensemble(models)))`, each layer only when asked
/// (TTA when `views` holds more than the identity).
pub fn build_restorer(
    models: Vec<LoadedModel>,
    views: &[Dihedral],
    tile: Option<(i64, i64)>,
) -> Result<Box<dyn Restore>> {
    wrap(Box::new(ensemble(models)), views, tile)
}

/// The checkpoints averaged, without TTA or tiles.
pub fn ensemble(models: Vec<LoadedModel>) -> Ensemble<Network> {
    // The var stores can go: the modules hold their own handles to the loaded tensors.
    Ensemble(models.into_iter().map(|m| m.model).collect())
}

/// [`build_restorer`]'s layers around a borrowed network, so that several view sets can be
/// scored with the networks loaded once (`eval --tta-compare`).
pub fn with_views<'a>(
    base: &'a dyn Restore,
    views: &[Dihedral],
    tile: Option<(i64, i64)>,
) -> Result<Box<dyn Restore + 'a>> {
    wrap(Box::new(base), views, tile)
}

fn wrap<'a>(
    mut r: Box<dyn Restore + 'a>,
    views: &[Dihedral],
    tile: Option<(i64, i64)>,
) -> Result<Box<dyn Restore + 'a>> {
    if views.iter().any(|v| !v.is_identity()) {
        r = Box::new(Tta::new(r, views));
    }
    if let Some((size, overlap)) = tile {
        r = Box::new(Tiled::new(r, size, overlap)?);
    }
    Ok(r)
}

/// Restores one image on `device` (without autograd) and quantises it on the CPU.
pub fn restore_image(r: &dyn Restore, img: &RgbImage, device: Device) -> Vec<u8> {
    let x = img.to_tensor().unsqueeze(0).to_device(device);
    let y: Tensor = tch::no_grad(|| r.restore(&x));
    assert_eq!(y.size(), x.size(), "restore changed the image size");
    to_u8_chw(&y.squeeze_dim(0))
}
