//! The training data: the dataset layout and its checks ([`scan_pairs`], [`scan_test`]), the
//! in-memory [`Store`], the seeded [`split`], the background [`Loader`] and paired augmentation.
//!
//! Every check that can fail on user data runs before training: [`scan_pairs`] (names, twins,
//! folders), [`Store::load`] (decoding, pair sizes), [`Loader::new`] (patch size).

pub mod augment;
mod layout;
mod loader;
mod split;
mod store;

pub use layout::{fingerprint, scan_pairs, scan_test, PairPath, TestPath, TestTypes};
pub use loader::{Batch, EpochBatches, Loader, LoaderConfig};
pub use split::{split, Split};
pub use store::{Sample, Store};
