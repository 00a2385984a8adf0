//! Flags several commands share: how images go through the network, and the device.

use clap::Args;
use promptir::device::parse_device;
use promptir::infer::TtaMode;
use promptir::io::EmaChoice;
use tch::Device;

/// How images go through the network: shared by predict, eval and visualize.
#[derive(Args)]
pub struct ForwardArgs {
    /// Test-time augmentation: off; 8 (all flips and quarter turns); flips (identity, hflip,
    /// vflip, both); auto (the views the checkpoints' training augmentations covered). A bare
    /// `--tta` (as early scripts wrote it) means auto.
    #[arg(long, value_enum, value_name = "MODE", default_value_t = TtaMode::Off,
          num_args = 0..=1, default_missing_value = "auto", require_equals = false)]
    pub tta: TtaMode,
    /// Restore in overlapping tiles of this size (for images too large for memory).
    #[arg(long)]
    pub tile: Option<i64>,
    /// Overlap between tiles in pixels [default: tile / 4].
    #[arg(long, requires = "tile")]
    pub tile_overlap: Option<i64>,
    /// auto, cpu, cuda or cuda:N.
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Which weights of a checkpoint: its moving average (trained with train.ema) or the raw
    /// weights; auto: the average when it has one.
    #[arg(long, value_enum, default_value_t = EmaChoice::Auto)]
    pub ema: EmaChoice,
}

impl ForwardArgs {
    /// Tile size and overlap, when tiling.
    pub fn tile(&self) -> Option<(i64, i64)> {
        self.tile.map(|t| (t, self.tile_overlap.unwrap_or(t / 4)))
    }

    pub fn device(&self) -> promptir::Result<Device> {
        parse_device(&self.device)
    }
}
