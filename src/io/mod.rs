//! Files: atomic writes and output checks, images, safetensors and checkpoints (with their
//! metadata), importing official weights, TensorBoard event files.

pub(crate) mod atomic;
pub(crate) mod checkpoint;
pub(crate) mod image;
pub(crate) mod import;
pub(crate) mod tensorboard;
pub(crate) mod tensors;

pub use atomic::{
    check_output_file, check_output_folder, check_writable, remove_stale_temps, write_atomic,
    write_atomic_bytes,
};
pub use checkpoint::{
    is_weight_key, load_model, load_model_choosing, save_checkpoint, save_model, CheckpointMeta,
    DatasetFingerprint, EmaChoice, LoadedModel, Provenance, Resume, ScalerState, TrainState,
    ValScores, CONFIG_KEY, EMA_PREFIX, STATE_PREFIX,
};
pub use image::{is_image_path, list_images, panel, stack, to_u8_chw, RgbImage};
pub use import::{import_official, ImportReport};
pub use tensorboard::{unix_time, EventWriter, SummaryWriter};
pub use tensors::{load_strict, load_strict_prefixed, save_tensors, TensorFile};
