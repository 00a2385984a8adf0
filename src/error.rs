//! The library's error type, in three families with their own exit codes
//! ([`Error::exit_code`]): what the user can fix (bad config, files, weights, flags: 2), what
//! happened to a run (it diverged: 3; a peer or the network was lost: 4, resumable), and bugs
//! (1). Other internal bugs panic.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("config {file}: {msg}")]
    Config { file: String, msg: String },
    #[error("{path}: {msg}")]
    Data { path: PathBuf, msg: String },
    #[error("weights {path}: {msg}")]
    Weights { path: PathBuf, msg: String },
    #[error("{0}")]
    Usage(String),
    /// Training diverged: the loss, a gradient or the weights became NaN/inf, or fp16 overflowed
    /// at every step. The message names the last good checkpoint.
    #[error("{0}")]
    Diverged(String),
    /// A collective failed: another rank, the rendezvous store or the network was lost. The
    /// run resumes from its last checkpoint.
    #[error("{0}")]
    Lost(String),
    /// A bug in promptir (an invariant broke), reported rather than panicking mid-run.
    #[error("internal error (a bug in promptir): {0}")]
    Internal(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// Only the first line: libtorch appends a C++ stack trace to its messages.
    #[error("libtorch: {}", first_line(.0))]
    Torch(#[from] tch::TchError),
    /// An exception from libtorch caught in the native layer (`csrc/native.cpp`).
    #[error("libtorch (native layer): {0}")]
    Native(String),
}

fn first_line(e: &tch::TchError) -> String {
    e.to_string().lines().next().unwrap_or_default().trim_end().to_string()
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The process's exit status for each family (the README lists them).
pub mod exit {
    pub const BUG: u8 = 1;
    pub const USAGE: u8 = 2;
    pub const DIVERGED: u8 = 3;
    pub const LOST: u8 = 4;
}

impl Error {
    /// The exit status this error ends the process with.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Diverged(_) => exit::DIVERGED,
            Error::Lost(_) => exit::LOST,
            Error::Internal(_) => exit::BUG,
            // libtorch refuses bad input (shapes, files, memory) far more often than it
            // reports a bug of ours.
            Error::Config { .. }
            | Error::Data { .. }
            | Error::Weights { .. }
            | Error::Usage(_)
            | Error::Io { .. }
            | Error::Torch(_)
            | Error::Native(_) => exit::USAGE,
        }
    }
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
    pub fn data(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Data { path: path.into(), msg: msg.into() }
    }
    pub fn weights(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::Weights { path: path.into(), msg: msg.into() }
    }
    pub fn config(file: impl Into<String>, msg: impl Into<String>) -> Self {
        Error::Config { file: file.into(), msg: msg.into() }
    }
}
