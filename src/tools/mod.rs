//! Tools around the harness: the benchmarks ([`bench`](mod@bench), [`bench_loader`]), the synthetic data
//! set ([`synth`]), the ablation report ([`report`]) and its charts ([`plot`]).

pub mod bench;
pub mod bench_loader;
pub mod plot;
pub mod report;
pub mod synth;
