//! `promptir report`.

use clap::Args;
use promptir::eval::SplitName;
use promptir::tools::report::{report, ReportOptions};
use std::path::PathBuf;

#[derive(Args)]
pub struct ReportCmd {
    /// Run log folders (logs/<run>); eval_<split>[_tta].json in them fill the test columns.
    #[arg(required = true)]
    runs: Vec<PathBuf>,
    #[arg(long, short, default_value = "results")]
    output: PathBuf,
    /// Folder with ensemble*_<split>[_tta].json [default: --output].
    #[arg(long)]
    evals: Option<PathBuf>,
    /// Which eval files to read (eval_<split>.json).
    #[arg(long, value_enum, default_value_t = SplitName::Test)]
    split: SplitName,
    /// A line for the notes under the table (repeatable).
    #[arg(long = "note")]
    notes: Vec<String>,
}

impl ReportCmd {
    pub fn run(self) -> anyhow::Result<()> {
        let opts = ReportOptions {
            runs: self.runs,
            output: self.output,
            evals: self.evals,
            split: self.split,
            notes: self.notes,
        };
        let s = report(&opts)?;
        let files: Vec<String> = s.files.iter().map(|f| f.display().to_string()).collect();
        println!(
            "{} run(s), {} ensemble(s): wrote {}",
            s.ablation.runs.len(),
            s.ablation.ensembles.len(),
            files.join(", ")
        );
        Ok(())
    }
}
