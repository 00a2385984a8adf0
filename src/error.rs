//! The library's error type: conditions a user can cause (bad config, bad files, bad weights).
//! Internal bugs panic; the CLI maps `Error` to exit code 2 and everything else to 1.

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

impl Error {
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
