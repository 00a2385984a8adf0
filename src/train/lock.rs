//! One writer per run: an advisory lock (`flock`) on `logs/<run>/run.lock`, taken by the
//! process that writes the run (rank 0) before it writes anything and held until it ends. A
//! second `train` on the same run (a resubmitted job while the first still runs) is refused,
//! naming the holder. The kernel drops the lock with its holder, so a run killed with kill -9
//! never stays locked; the file's contents only say who held it last.

use super::run_dir::{utc_stamp, RunDir};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fs::{File, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::PathBuf;

/// Who holds a run, as written in its lock file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Holder {
    pid: u32,
    host: String,
    /// UTC, `YYYYmmdd-HHMMSS`.
    since: String,
}

/// The held lock of a run; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "an unknown host".into())
}

impl RunLock {
    pub fn path(run: &RunDir) -> PathBuf {
        run.logs.join("run.lock")
    }

    /// Takes `run`'s lock, or refuses (a usage error naming the holder) while another process
    /// holds it. `None` where the filesystem has no locks: a warning, and the run goes on.
    pub fn take(run: &RunDir) -> Result<Option<RunLock>> {
        let path = Self::path(run);
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let who = match serde_json::from_str::<Holder>(&text) {
                    Ok(h) => format!("PID {} on {} (since {} UTC)", h.pid, h.host, h.since),
                    Err(_) => "another process (it has not written its name yet)".into(),
                };
                return Err(Error::Usage(format!(
                    "run {} is being written by {who} ({}); wait for it to end or stop it, then continue with --resume {}, or train a new run under another --name",
                    run.name,
                    path.display(),
                    run.name
                )));
            }
            Err(TryLockError::Error(e)) => {
                eprintln!(
                    "warning: {}: this filesystem does not lock files ({e}); nothing stops a second process from writing run {} at the same time",
                    path.display(),
                    run.name
                );
                return Ok(None);
            }
        }
        let holder = Holder { pid: std::process::id(), host: host_name(), since: utc_stamp() };
        let json = serde_json::to_string(&holder).expect("a holder serialises") + "\n";
        // Overwritten in place: the file is the lock, so it is never replaced by a rename.
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| file.write_all(json.as_bytes()))
            .map_err(|e| Error::io(&path, e))?;
        Ok(Some(RunLock { _file: file }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_run_is_refused_with_its_holder_and_freed_on_drop() {
        let d = tempfile::tempdir().unwrap();
        let run = RunDir::claim("r", &d.path().join("logs"), &d.path().join("weights")).unwrap();
        let held = RunLock::take(&run).unwrap().expect("tmpfs locks");
        // flock locks belong to the open file, so a second open in this process conflicts as
        // another process's would.
        let e = RunLock::take(&run).unwrap_err().to_string();
        let pid = std::process::id();
        assert!(e.contains(&format!("run r is being written by PID {pid} on ")), "{e}");
        assert!(e.contains("--resume r") && e.contains("run.lock"), "{e}");
        drop(held);
        let again = RunLock::take(&run).unwrap();
        assert!(again.is_some());
        let text = std::fs::read_to_string(RunLock::path(&run)).unwrap();
        let h: Holder = serde_json::from_str(&text).unwrap();
        assert_eq!((h.pid, h.host), (pid, host_name()));
    }
}
