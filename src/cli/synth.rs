//! `promptir synth`.

use clap::Args;
use promptir::tools::synth::{generate, write_sheet, SynthOptions};
use std::path::PathBuf;

#[derive(Args)]
pub struct SynthCmd {
    /// New or empty folder for the dataset.
    #[arg(long, short, required_unless_present = "sheet")]
    output: Option<PathBuf>,
    /// Training pairs, split evenly between rain and snow.
    #[arg(long, default_value_t = 200)]
    train: usize,
    /// Test images; their ground truth goes to test/clean, their types to test/types.json.
    #[arg(long, default_value_t = 20)]
    test: usize,
    /// Image side in pixels.
    #[arg(long, default_value_t = 256)]
    size: usize,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Crop clean images from your own photos (png/jpg) instead of drawing landscapes.
    #[arg(long)]
    clean_dir: Option<PathBuf>,
    /// Write only a sample sheet PNG (4 rows of clean | rain | snow) to this path.
    #[arg(long, conflicts_with = "output")]
    sheet: Option<PathBuf>,
}

impl SynthCmd {
    pub fn run(self) -> anyhow::Result<()> {
        let opts = SynthOptions {
            train: self.train,
            test: self.test,
            size: self.size,
            seed: self.seed,
            clean_dir: self.clean_dir,
        };
        let start = std::time::Instant::now();
        if let Some(path) = self.sheet {
            write_sheet(&path, 4, &opts)?;
            println!("wrote {}", path.display());
        } else if let Some(out) = self.output {
            let s = generate(&out, &opts)?;
            println!(
                "wrote {} ({}+{} train pairs, {} test images) in {:.1}s",
                out.display(),
                s.train_rain,
                s.train_snow,
                s.test,
                start.elapsed().as_secs_f64()
            );
        }
        Ok(())
    }
}
