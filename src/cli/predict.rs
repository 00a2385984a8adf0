//! `promptir predict`.

use super::args::ForwardArgs;
use clap::Args;
use promptir::infer::{predict, PredictOptions};
use std::path::PathBuf;

#[derive(Args)]
pub struct PredictCmd {
    /// A checkpoint; repeat to average several (they may differ in config).
    #[arg(long, required = true)]
    weights: Vec<PathBuf>,
    /// Folder of degraded .png/.jpg images.
    #[arg(long)]
    input: PathBuf,
    /// The .npz to write.
    #[arg(long, short, default_value = "pred.npz")]
    output: PathBuf,
    /// Also save the restored images as PNGs in this folder.
    #[arg(long)]
    png_dir: Option<PathBuf>,
    #[command(flatten)]
    fwd: ForwardArgs,
}

impl PredictCmd {
    pub fn run(self) -> anyhow::Result<()> {
        let opts = PredictOptions {
            device: self.fwd.device()?,
            tile: self.fwd.tile(),
            tta: self.fwd.tta,
            ema: self.fwd.ema,
            weights: self.weights,
            input: self.input,
            output: self.output,
            png_dir: self.png_dir,
        };
        let s = predict(&opts)?;
        if let Some(n) = &s.tta.notice {
            eprintln!("note: {n}");
        }
        println!(
            "wrote {} ({} images, {} model(s), tta {}, {:.1} s)",
            opts.output.display(),
            s.images,
            s.models,
            s.tta.describe(),
            s.seconds
        );
        Ok(())
    }
}
