//! `promptir import` and `promptir inspect`: official checkpoints in, this project's out.

use anyhow::Context;
use clap::Args;
use promptir::io::{import_official, is_weight_key, CheckpointMeta, TensorFile, EMA_PREFIX};
use promptir::model::Arch;
use std::path::PathBuf;

#[derive(Args)]
pub struct ImportCmd {
    /// The official checkpoint.
    ckpt: PathBuf,
    /// Where to write the converted checkpoint (.safetensors).
    #[arg(long, short)]
    output: PathBuf,
    /// The network it holds; recognised from the keys when left out.
    #[arg(long, value_enum)]
    arch: Option<Arch>,
}

impl ImportCmd {
    pub fn run(self) -> anyhow::Result<()> {
        let r = import_official(&self.ckpt, &self.output, self.arch)
            .with_context(|| format!("importing {}", self.ckpt.display()))?;
        println!(
            "wrote {} ({} tensors, {} parameters, {} {})",
            self.output.display(),
            r.tensors,
            r.parameters,
            r.config.arch().name(),
            r.config.summary()
        );
        if !r.dropped.is_empty() {
            println!(
                "dropped {} keys of modules the official code never runs: {}",
                r.dropped.len(),
                r.dropped.join(", ")
            );
        }
        Ok(())
    }
}

#[derive(Args)]
pub struct InspectCmd {
    /// A checkpoint written by this project.
    weights: PathBuf,
}

impl InspectCmd {
    pub fn run(self) -> anyhow::Result<()> {
        let file = TensorFile::open(&self.weights)?;
        let meta = CheckpointMeta::read(&file)?;
        let header = file.header();
        let weights = header.iter().filter(|(k, _)| is_weight_key(k));
        let params: i64 = weights.clone().map(|(_, (_, s))| s.iter().product::<i64>()).sum();
        println!(
            "{}: {} weight tensors, {params} parameters",
            self.weights.display(),
            weights.count()
        );
        let ema = header.keys().filter(|k| k.starts_with(EMA_PREFIX)).count();
        if ema > 0 {
            println!(
                "moving average of the weights: {ema} tensors (used by default; --ema off: raw)"
            );
        }
        println!("model: {}", serde_json::to_string(&meta.model)?);
        if let Some(p) = &meta.provenance {
            println!(
                "run: {} (epoch {}, step {}, seed {}, val_fraction {})",
                p.run, p.epoch, p.step, p.seed, p.val_fraction
            );
            if let Some(v) = p.val.as_ref().and_then(|v| v.psnr.get("all")) {
                println!("val PSNR: {v:.4} dB");
            }
            let d = &p.dataset;
            println!(
                "data: {} ({} pairs, files crc32c {})",
                d.root.display(),
                d.pairs,
                d.files_crc32c
            );
            println!("built from: {}", p.git_commit.as_deref().unwrap_or("unknown source"));
        }
        if let Some(src) = &meta.imported_from {
            println!("imported from: {src}");
        }
        if let Some(r) = &meta.resume {
            println!("resume point: {}", serde_json::to_string(&r.state)?);
        }
        Ok(())
    }
}
