//! The dataset layout on disk (course release), and the checks that it holds:
//! ```text
//! ROOT/train/degraded/<type>-<N>.png     paired by name with
//! ROOT/train/clean/<type>_clean-<N>.png  (<type> is [a-z]+, e.g. rain, snow; png/jpg/jpeg)
//! ROOT/test/degraded/<K>.png             no ground truth, except in synthetic sets that also
//! ROOT/test/clean/<K>.png                have same-named targets for scoring,
//! ROOT/test/types.json                   and each test image's type ([`TestTypes`])
//! ```

use crate::io::image::{is_image_path, list_images};
use crate::io::{write_atomic_bytes, DatasetFingerprint};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// One training pair found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PairPath {
    /// The degraded file name, e.g. `rain-12.png`.
    pub name: String,
    /// Degradation type, the name's prefix (`rain`, `snow`, ...).
    pub kind: String,
    pub degraded: PathBuf,
    pub clean: PathBuf,
}

/// One test image; `clean` only in synthetic sets that ship targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestPath {
    /// The file name, e.g. `7.png` (the `pred.npz` key).
    pub name: String,
    pub degraded: PathBuf,
    pub clean: Option<PathBuf>,
}

/// `<kind><sep><digits>.<png|jpg|jpeg>` split into (kind, digits); `sep` is `-` or `_clean-`.
fn parse_name(file: &str, sep: &str) -> Option<(String, String)> {
    let (stem, ext) = file.rsplit_once('.')?;
    if !matches!(ext.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg") {
        return None;
    }
    let (kind, num) = stem.rsplit_once('-')?;
    let kind = kind.strip_suffix(sep.trim_end_matches('-'))?;
    let ok = !kind.is_empty()
        && kind.bytes().all(|b| b.is_ascii_lowercase())
        && !num.is_empty()
        && num.bytes().all(|b| b.is_ascii_digit());
    ok.then(|| (kind.to_string(), num.to_string()))
}

/// Regular, non-hidden files directly in `dir` (hidden ones such as `.DS_Store` are skipped).
fn files_in(dir: &Path, what: &str) -> Result<Vec<PathBuf>> {
    if !dir.is_dir() {
        return Err(Error::data(
            dir,
            format!("missing folder; {what} (check data.root points at the dataset root)"),
        ));
    }
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    let mut files = Vec::new();
    for entry in rd {
        let path = entry.map_err(|e| Error::io(dir, e))?.path();
        let hidden = path.file_name().is_some_and(|n| n.to_string_lossy().starts_with('.'));
        if !hidden && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

fn file_name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// ` (and N more)` when a problem repeats.
fn more(n: usize) -> String {
    if n > 1 {
        format!(" (and {} more like it)", n - 1)
    } else {
        String::new()
    }
}

/// Key (kind, number as written) -> path; errors on bad names and duplicates.
fn index_folder(
    dir: &Path,
    sep: &str,
    example: &str,
) -> Result<BTreeMap<(String, String), PathBuf>> {
    let files = files_in(dir, &format!("expected files named like {example}"))?;
    if files.is_empty() {
        return Err(Error::data(
            dir,
            format!("no images in this folder; expected files named like {example}"),
        ));
    }
    let mut map = BTreeMap::new();
    let mut bad = Vec::new();
    for f in files {
        match parse_name(&file_name(&f), sep) {
            Some(key) => {
                if let Some(old) = map.insert(key, f.clone()) {
                    return Err(Error::data(
                        &f,
                        format!(
                            "same pair number as {}; keep only one of the two",
                            file_name(&old)
                        ),
                    ));
                }
            }
            None => bad.push(f),
        }
    }
    if let Some(first) = bad.first() {
        return Err(Error::data(
            first,
            format!(
                "unexpected file name{}; files here must be named like {example} \
                 (type in lowercase letters, png or jpg); rename or move it",
                more(bad.len())
            ),
        ));
    }
    Ok(map)
}

/// Finds the training pairs under `root`, matched by name (never by sort order), sorted by
/// type and then numerically. Fails on a missing or empty folder, an unexpected file name,
/// a duplicate number, or an image without its twin.
pub fn scan_pairs(root: &Path) -> Result<Vec<PairPath>> {
    if !root.is_dir() {
        return Err(Error::data(
            root,
            "dataset folder does not exist; give --data DIR or set data.root to the folder holding train/",
        ));
    }
    let ddir = root.join("train").join("degraded");
    let cdir = root.join("train").join("clean");
    let degraded = index_folder(&ddir, "-", "rain-1.png")?;
    let clean = index_folder(&cdir, "_clean-", "rain_clean-1.png")?;
    let lonely: Vec<_> = degraded.iter().filter(|(k, _)| !clean.contains_key(*k)).collect();
    if let Some(((kind, num), path)) = lonely.first() {
        return Err(Error::data(
            path,
            format!(
                "has no clean twin (expected {}){}; add the clean image or remove the degraded one",
                cdir.join(format!("{kind}_clean-{num}.png")).display(),
                more(lonely.len())
            ),
        ));
    }
    let orphans: Vec<_> = clean.iter().filter(|(k, _)| !degraded.contains_key(*k)).collect();
    if let Some(((kind, num), path)) = orphans.first() {
        return Err(Error::data(
            path,
            format!(
                "has no degraded twin (expected {}){}; add the degraded image or remove the clean one",
                ddir.join(format!("{kind}-{num}.png")).display(),
                more(orphans.len())
            ),
        ));
    }
    let mut pairs: Vec<(String, PairPath)> = degraded
        .into_iter()
        .map(|(key, d)| {
            let clean = clean[&key].clone();
            let pair = PairPath { name: file_name(&d), kind: key.0, clean, degraded: d };
            (key.1, pair)
        })
        .collect();
    // Numeric order within a type: compare digit strings without leading zeros by length.
    pairs.sort_by(|(a, pa), (b, pb)| {
        let num = |s: &str| {
            let t = s.trim_start_matches('0');
            (t.len(), t.to_string(), s.len())
        };
        (&pa.kind, num(a)).cmp(&(&pb.kind, num(b)))
    });
    let pairs: Vec<PairPath> = pairs.into_iter().map(|(_, p)| p).collect();
    Ok(pairs)
}

/// Finds the test images under `root/test/degraded` (sorted numerically) and, if the folder
/// `root/test/clean` exists, their same-named targets (each must have one).
pub fn scan_test(root: &Path) -> Result<Vec<TestPath>> {
    let ddir = root.join("test").join("degraded");
    let non_images = |dir: &Path| -> Result<()> {
        let bad: Vec<PathBuf> = files_in(dir, "expected test images")?
            .into_iter()
            .filter(|p| !is_image_path(p))
            .collect();
        match bad.first() {
            Some(f) => Err(Error::data(
                f,
                format!(
                    "not an image file name{} (png or jpg expected); move it out",
                    more(bad.len())
                ),
            )),
            None => Ok(()),
        }
    };
    non_images(&ddir)?;
    let images = list_images(&ddir)?;
    if images.is_empty() {
        return Err(Error::data(
            &ddir,
            "no images in this folder; expected test images like 0.png",
        ));
    }
    let cdir = root.join("test").join("clean");
    let clean: Option<BTreeMap<String, PathBuf>> = if cdir.is_dir() {
        non_images(&cdir)?;
        Some(list_images(&cdir)?.into_iter().map(|p| (file_name(&p), p)).collect())
    } else {
        None
    };
    let tests: Vec<TestPath> = images
        .into_iter()
        .map(|d| TestPath {
            name: file_name(&d),
            clean: clean.as_ref().and_then(|c| c.get(&file_name(&d)).cloned()),
            degraded: d,
        })
        .collect();
    if let Some(clean) = &clean {
        if let Some(t) = tests.iter().find(|t| t.clean.is_none()) {
            return Err(Error::data(
                &t.degraded,
                format!(
                    "no target {}; test/clean must hold one per test image",
                    cdir.join(&t.name).display()
                ),
            ));
        }
        if let Some((name, path)) = clean.iter().find(|(n, _)| !tests.iter().any(|t| &&t.name == n))
        {
            return Err(Error::data(
                path,
                format!("no test image {}; remove the stray target", ddir.join(name).display()),
            ));
        }
    }
    Ok(tests)
}

/// What a run trained on: CRC-32C of each pair's file names (relative to `root`) and sizes, in
/// scan order. Cheap (no file is read), and any added, removed, renamed or re-exported file
/// changes it.
pub fn fingerprint(root: &Path, pairs: &[PairPath]) -> DatasetFingerprint {
    let mut crc = 0u32;
    for f in pairs.iter().flat_map(|p| [&p.degraded, &p.clean]) {
        let name = f.strip_prefix(root).unwrap_or(f);
        let size = std::fs::metadata(f).map_or(0, |m| m.len());
        crc = crc32c::crc32c_append(crc, format!("{}\t{size}\n", name.display()).as_bytes());
    }
    DatasetFingerprint {
        root: root.to_path_buf(),
        pairs: pairs.len(),
        files_crc32c: format!("{crc:08x}"),
    }
}

/// `test/types.json`: each test image's degradation type, `{"0.png": "rain", ...}`. Written by
/// `promptir synth`, read by `promptir eval --split test` for per-type scores.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct TestTypes(pub BTreeMap<String, String>);

impl TestTypes {
    /// Where a dataset keeps it.
    pub fn path(root: &Path) -> PathBuf {
        root.join("test").join("types.json")
    }

    /// Reads and checks the file: a map of names to types, none empty or `all` (the overall row).
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let types: TestTypes = serde_json::from_str(&text).map_err(|e| {
            Error::data(
                path,
                format!("not a {{\"0.png\": \"rain\", ...}} map of names to types: {e}"),
            )
        })?;
        if let Some((name, kind)) = types.0.iter().find(|(_, k)| k.is_empty() || *k == "all") {
            return Err(Error::data(
                path,
                format!("type {kind:?} of {name}: use a name other than \"\" and \"all\""),
            ));
        }
        Ok(types)
    }

    pub fn write(&self, path: &Path) -> Result<()> {
        let json = serde_json::to_string_pretty(self).expect("a string map serialises");
        write_atomic_bytes(path, json.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_into_kind_and_number() {
        assert_eq!(parse_name("rain-12.png", "-"), Some(("rain".into(), "12".into())));
        assert_eq!(parse_name("snow_clean-3.JPG", "_clean-"), Some(("snow".into(), "3".into())));
        assert_eq!(parse_name("haze-7.jpeg", "-"), Some(("haze".into(), "7".into())));
        for bad in [
            "rain_clean-1.png",
            "Rain-1.png",
            "rain-1a.png",
            "rain-.png",
            "-1.png",
            "rain-1.txt",
            "rain1.png",
        ] {
            assert_eq!(parse_name(bad, "-"), None, "{bad}");
        }
        assert_eq!(parse_name("rain-1.png", "_clean-"), None);
    }

    #[test]
    fn test_types_round_trip_and_refuse_reserved_names() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("types.json");
        let t = TestTypes([("0.png".to_string(), "rain".to_string())].into());
        t.write(&p).unwrap();
        assert_eq!(TestTypes::read(&p).unwrap(), t);
        std::fs::write(&p, r#"{"0.png": "all"}"#).unwrap();
        assert!(TestTypes::read(&p).unwrap_err().to_string().contains("\"all\""));
        std::fs::write(&p, r#"["rain"]"#).unwrap();
        assert!(TestTypes::read(&p).unwrap_err().to_string().contains("map of names"));
    }
}
