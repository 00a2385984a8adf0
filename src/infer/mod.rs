//! Inference: the one forward path ([`Restore`]) with padding, test-time augmentation,
//! checkpoint ensembles and tiling as wrappers; checkpoints loaded into it; `predict` and its
//! `pred.npz`.

mod dihedral;
mod npz;
mod predict;
mod restore;
mod restorer;
mod tile;
mod tta;

pub use dihedral::{view_list, Dihedral};
pub use predict::{predict, PredictOptions, PredictSummary};
pub use restore::{mean, padded, Ensemble, FnRestore, Restore, Tta};
pub use restorer::{build_restorer, ensemble, load_models, with_views};
pub use tile::Tiled;
pub use tta::{trained_views, TtaMode, TtaPlan};
