//! Writing files so that a crash never leaves a torn one, and checking outputs before work starts.

use crate::{Error, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Writes `path` through a temp file in the same folder, synced and then renamed, so a crash at
/// any moment leaves either the old file or the new one, never a torn one.
pub fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut std::fs::File) -> std::io::Result<()>,
) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = temp_beside(path)?;
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        write(&mut f)?;
        f.flush()?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // Make the rename itself durable.
        if let Ok(d) = std::fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// `.<name>.tmp-<pid>` in `path`'s folder: where a file is written before it is renamed into
/// place, and what [`remove_stale_temps`] recognises.
pub(crate) fn temp_beside(path: &Path) -> Result<PathBuf> {
    let name = path
        .file_name()
        .ok_or_else(|| Error::Usage(format!("{}: not a file path", path.display())))?;
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".tmp-{}", std::process::id()));
    Ok(path.with_file_name(tmp))
}

pub fn write_atomic_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |f| f.write_all(bytes))
}

/// Removes temp files that [`write_atomic`] left in `dir` when its process was killed mid-write
/// (`.<name>.tmp-<pid>`, never a finished file). Returns how many were removed.
pub fn remove_stale_temps(dir: &Path) -> usize {
    let Ok(rd) = std::fs::read_dir(dir) else { return 0 };
    let mut n = 0;
    for p in rd.filter_map(|e| e.ok().map(|e| e.path())) {
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        // A writer that is still alive (this process, or another on Linux) keeps its temp file.
        let stale = name.starts_with('.')
            && name.rsplit_once(".tmp-").is_some_and(|(_, pid)| {
                !pid.is_empty()
                    && pid.bytes().all(|b| b.is_ascii_digit())
                    && pid != std::process::id().to_string()
                    && !Path::new("/proc").join(pid).exists()
            });
        if stale && p.is_file() && std::fs::remove_file(&p).is_ok() {
            n += 1;
        }
    }
    n
}

/// Fails early when the file `path` cannot be written: its folder is missing, a file, or
/// read-only, or `path` is a folder itself.
pub fn check_output_file(path: &Path) -> Result<()> {
    if path.is_dir() {
        return Err(Error::data(path, "output is a folder; give a file name such as pred.npz"));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if dir.exists() && !dir.is_dir() {
        return Err(Error::data(dir, "is a file, not a folder; choose another output path"));
    }
    if !dir.is_dir() {
        return Err(Error::data(dir, "output folder does not exist; create it first"));
    }
    check_writable(dir)
}

/// Fails early when the folder `dir` (which may not exist yet) cannot be created or written:
/// it is a file, or its nearest existing ancestor is a file or read-only.
pub fn check_output_folder(dir: &Path) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(Error::data(dir, "is a file, not a folder; choose another folder"));
    }
    let existing = dir.ancestors().find(|a| a.exists()).unwrap_or(Path::new("."));
    if !existing.is_dir() {
        return Err(Error::data(
            existing,
            format!("is a file, so {} cannot be created; choose another folder", dir.display()),
        ));
    }
    check_writable(existing)
}

/// Creates and removes a probe file in `dir`.
pub fn check_writable(dir: &Path) -> Result<()> {
    let probe = dir.join(format!(".promptir-write-probe-{}", std::process::id()));
    match std::fs::File::create(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(Error::data(
            dir,
            format!("output folder is not writable ({e}); choose another output location"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.bin");
        write_atomic_bytes(&p, b"one").unwrap();
        write_atomic_bytes(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn stale_temps_are_swept_and_finished_files_kept() {
        let dir = tempfile::tempdir().unwrap();
        let names = [".last.safetensors.tmp-99999999", ".a.tmp-99999998", "a", ".x.tmp-abc"];
        for n in names {
            std::fs::write(dir.path().join(n), b"x").unwrap();
        }
        assert_eq!(remove_stale_temps(dir.path()), 2);
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".x.tmp-abc", "a"]);
    }

    #[test]
    fn output_checks_refuse_files_as_folders() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"x").unwrap();
        let e = check_output_folder(&file.join("sub/run")).unwrap_err().to_string();
        assert!(e.contains("is a file"), "{e}");
        let e = check_output_file(&file.join("pred.npz")).unwrap_err().to_string();
        assert!(e.contains("is a file"), "{e}");
        check_output_folder(&dir.path().join("new/deeper")).unwrap();
        assert!(!dir.path().join("new").exists(), "checks create nothing");
    }
}
