//! Reliability: a typo, a bad file or a killed process must cost minutes, never the run.
//!
//! - `bad_inputs_exit_2_with_one_line_and_write_nothing`: a table of user errors across the
//!   commands; each must exit 2 with one `error:` line naming the file/key and what to do, no
//!   panic text, and leave its folder exactly as it was (no partial output, no run folder).
//! - kill -9 during checkpoint saves (a child process saving in a loop) never leaves an
//!   unloadable checkpoint; a training run killed twice resumes and ends bit-equal to an
//!   uninterrupted one.
//! - property tests: random YAML and `--set` mutations, random / truncated / bit-flipped
//!   checkpoint bytes and random metadata configs give `Ok` or `Err`, never a panic.

use promptir::config::Experiment;
use promptir::io::{self as checkpoint, TensorFile};
use promptir::model::{ModelConfig, PromptIr};
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tch::{nn, Device, Tensor};

fn promptir(cwd: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_promptir"));
    // One libtorch thread: the suite runs several processes at once on small machines.
    c.current_dir(cwd).env("OMP_NUM_THREADS", "1").env_remove("RUST_BACKTRACE");
    c
}

fn s(p: &Path) -> String {
    p.to_str().unwrap().to_string()
}

/// A tiny checkpoint of this project (random weights).
fn write_tiny_checkpoint(path: &Path, cfg: &ModelConfig) {
    let vs = nn::VarStore::new(Device::Cpu);
    let _m = PromptIr::seeded(&vs.root(), cfg, 0);
    checkpoint::save_model(&vs, &checkpoint::CheckpointMeta::new((*cfg).clone()), path).unwrap();
}

/// All tensors of a safetensors file.
fn tensors(path: &Path) -> Vec<(String, Tensor)> {
    let f = TensorFile::open(path).unwrap();
    f.header().keys().map(|k| (k.clone(), f.tensor(k).unwrap())).collect()
}

/// `path`'s tensors (minus `drop`) rewritten with `edit` applied to its metadata.
fn rewrite(path: &Path, out: &Path, drop: &str, edit: impl FnOnce(&mut BTreeMap<String, String>)) {
    let mut meta = TensorFile::open(path).unwrap().metadata();
    edit(&mut meta);
    let t: Vec<_> = tensors(path).into_iter().filter(|(k, _)| k != drop).collect();
    checkpoint::save_tensors(out, &t, meta).unwrap();
}

fn set_config_key(meta: &mut BTreeMap<String, String>, key: &str, v: serde_json::Value) {
    let mut cfg: serde_json::Value = serde_json::from_str(&meta[checkpoint::CONFIG_KEY]).unwrap();
    cfg[key] = v;
    meta.insert(checkpoint::CONFIG_KEY.into(), cfg.to_string());
}

/// Shared inputs, built once: a dataset, an experiment, a checkpoint, a short training run
/// (`r`, stopped mid-epoch at step 2) and a few odd files. Rows copy what they modify.
struct Fixture {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Fixture {
    fn p(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }
    /// `train --config exp.yaml --data data` in a row folder holding a copy of the dataset.
    fn train(&self, row: &Path, extra: &[&str]) -> Vec<String> {
        crate::common::copy_dir(&self.p("data"), &row.join("data"));
        let exp = self.p("exp.yaml");
        let mut a = vec!["train", "--config", exp.to_str().unwrap()];
        a.extend(["--data", "data", "--quiet"]);
        a.extend(extra);
        a.into_iter().map(String::from).collect()
    }
    /// `train --resume r` in a row folder holding a copy of run `r`.
    fn resume(&self, row: &Path, extra: &[&str]) -> Vec<String> {
        crate::common::copy_dir(&self.p("run"), row);
        crate::common::copy_dir(&self.p("data"), &row.join("data"));
        let mut a = vec!["train", "--resume", "r", "--quiet"];
        a.extend(extra);
        a.into_iter().map(String::from).collect()
    }
    /// `eval`/`visualize` of the run's checkpoint on a copy of the dataset.
    fn score(&self, row: &Path, cmd: &str, extra: &[&str]) -> Vec<String> {
        crate::common::copy_dir(&self.p("data"), &row.join("data"));
        let w = self.p("run/weights/r/last.safetensors");
        let mut a = vec![cmd, "--weights", w.to_str().unwrap(), "--device", "cpu", "--quiet"];
        if !extra.contains(&"--data") {
            a.extend(["--data", "data"]);
        }
        a.extend(extra);
        a.into_iter().map(String::from).collect()
    }
    fn predict(&self, weights: &Path, input: &Path, extra: &[&str]) -> Vec<String> {
        let mut a = vec!["predict".to_string(), "--weights".into(), s(weights)];
        a.extend(["--input".into(), s(input), "--output".into(), "pred.npz".into()]);
        a.extend(["--device".into(), "cpu".into()]);
        a.extend(extra.iter().map(|x| x.to_string()));
        a
    }
}

fn fixture() -> &'static Fixture {
    static FX: OnceLock<Fixture> = OnceLock::new();
    FX.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        crate::common::paired_dataset(&root.join("data"));
        let tiny = crate::common::repo().join("experiments/tiny.yaml");
        std::fs::write(
            root.join("exp.yaml"),
            format!(
                "extends: {}\nname: r\ndata: {{val_fraction: 0.25, workers: 1}}\n\
                 train: {{epochs: 2, batch_size: 2, patch_size: 16, val_every: 1, log_every: 1, val_images: 0}}\n",
                tiny.display()
            ),
        )
        .unwrap();
        write_tiny_checkpoint(&root.join("tiny.safetensors"), &ModelConfig::tiny());
        std::fs::create_dir_all(root.join("imgs")).unwrap();
        for n in 0..2 {
            std::fs::copy(
                root.join(format!("data/train/degraded/rain-{}.png", n + 1)),
                root.join(format!("imgs/{n}.png")),
            )
            .unwrap();
        }
        std::fs::write(root.join("afile"), b"a regular file, not a folder").unwrap();
        // torch.save's legacy format (magic, version, sys info, object, storage keys) of a dict
        // without any state_dict, written with pickle alone to keep torch out of the fixture.
        let legacy = r#"
import pickle, sys
f = open(sys.argv[1], "wb")
sizes = {"short": 2, "int": 4, "long": 4}
header = {"protocol_version": 1001, "little_endian": True, "type_sizes": sizes}
for o in (0x1950A86A20F9469CFC6C, 1001, header, {"epoch": 3, "note": "no weights"}, []):
    pickle.dump(o, f, protocol=2)
"#;
        crate::common::run_python(&["-c", legacy, root.join("nostate.ckpt").to_str().unwrap()]);
        let out = promptir(&root)
            .args(["train", "--config", "exp.yaml", "--data", "data", "--quiet"])
            .args(["--logs-dir", "run/logs", "--weights-dir", "run/weights"])
            .args(["--set", "train.max_steps=2"])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        Fixture { _dir: dir, root }
    })
}

type Setup = fn(&Path, &Fixture) -> Vec<String>;

/// One bad input: `setup` prepares the row's folder (the command's working directory) and
/// returns the arguments; stderr must contain every `expect` substring.
struct Row {
    name: &'static str,
    setup: Setup,
    expect: &'static [&'static str],
}

fn row(name: &'static str, expect: &'static [&'static str], setup: Setup) -> Row {
    Row { name, setup, expect }
}

/// `promptir synth` with a small, quick size.
fn synth(extra: &[&str]) -> Vec<String> {
    let mut a = vec!["synth", "--train", "4", "--test", "2"];
    if !extra.contains(&"--size") {
        a.extend(["--size", "32"]);
    }
    a.extend(extra);
    a.into_iter().map(String::from).collect()
}

fn write(p: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

fn yaml_row(row: &Path, fx: &Fixture, text: &str) -> Vec<String> {
    let exp = fx.p("exp.yaml");
    write(&row.join("bad.yaml"), format!("extends: {}\n{text}", exp.display()).as_bytes());
    let mut a = fx.train(row, &[]);
    a[2] = s(&row.join("bad.yaml"));
    a
}

fn rows() -> Vec<Row> {
    vec![
        // ---- train: the experiment file and --set ----
        row(
            "config file missing",
            &["nope.yaml", "cannot open the experiment file", "check the path"],
            |r, fx| {
                let mut a = fx.train(r, &[]);
                a[2] = s(&r.join("nope.yaml"));
                a
            },
        ),
        row("YAML syntax error", &["bad.yaml", "not valid YAML"], |r, fx| {
            yaml_row(r, fx, "train: {lr: 1.0e-3\n")
        }),
        row("unknown YAML key", &["bad.yaml", "unknown key at `train.bach_size`"], |r, fx| {
            yaml_row(r, fx, "train: {bach_size: 4}\n")
        }),
        row("wrong YAML type", &["bad.yaml", "bad value at `train.lr`"], |r, fx| {
            yaml_row(r, fx, "train: {lr: fast}\n")
        }),
        row("negative lr", &["exp.yaml", "train.lr must be > 0, got -1"], |r, fx| {
            fx.train(r, &["--set", "train.lr=-1"])
        }),
        row(
            "patch 100",
            &["train.patch_size must be a positive multiple of 8, got 100"],
            |r, fx| fx.train(r, &["--set", "train.patch_size=100"]),
        ),
        row("batch 0", &["train.batch_size must be >= 1"], |r, fx| {
            fx.train(r, &["--set", "train.batch_size=0"])
        }),
        row("unknown device", &["device \"tpu\"", "use auto, cpu, cuda or cuda:N"], |r, fx| {
            fx.train(r, &["--device", "tpu"])
        }),
        row("absent CUDA device", &["device \"cuda:99\""], |r, fx| {
            fx.train(r, &["--device", "cuda:99"])
        }),
        row("absurd model size", &["about 3.8e10 parameters", "model.dim"], |r, fx| {
            fx.train(r, &["--set", "model.dim=4000"])
        }),
        row("run name with a path", &["name \"../x\"", "plain folder name"], |r, fx| {
            fx.train(r, &["--name", "../x"])
        }),
        row("--set on a value", &["--set train.lr.x", "not a mapping"], |r, fx| {
            fx.train(r, &["--set", "train.lr.x=1"])
        }),
        row(
            "VGG file missing (perceptual > 0)",
            &["none/vgg16.safetensors", "scripts/export_vgg16.py"],
            |r, fx| {
                fx.train(
                    r,
                    &[
                        "--set",
                        "loss.perceptual=0.1",
                        "--set",
                        "loss.vgg_weights=none/vgg16.safetensors",
                    ],
                )
            },
        ),
        // ---- train: output folders ----
        row(
            "logs folder under a file",
            &["afile", "is a file", "choose another folder"],
            |r, fx| {
                write(&r.join("afile"), b"x");
                fx.train(r, &["--logs-dir", "afile/logs"])
            },
        ),
        // ---- train: the dataset ----
        row(
            "data folder missing",
            &["nodata", "dataset folder does not exist", "--data"],
            |r, fx| {
                let mut a = fx.train(r, &[]);
                a[4] = "nodata".into();
                a
            },
        ),
        row("empty folder", &["train/degraded", "no images in this folder"], |r, fx| {
            let a = fx.train(r, &[]);
            std::fs::remove_dir_all(r.join("data/train/degraded")).unwrap();
            std::fs::create_dir(r.join("data/train/degraded")).unwrap();
            a
        }),
        row(
            "missing clean twin",
            &["rain-2.png", "no clean twin", "rain_clean-2.png", "add the clean image"],
            |r, fx| {
                let a = fx.train(r, &[]);
                std::fs::remove_file(r.join("data/train/clean/rain_clean-2.png")).unwrap();
                a
            },
        ),
        row(
            "size-mismatched pair",
            &["rain_clean-3.png", "is 32x24", "rain-3.png", "re-export"],
            |r, fx| {
                let a = fx.train(r, &[]);
                let img =
                    promptir::io::RgbImage { width: 32, height: 24, hwc: vec![9; 32 * 24 * 3] };
                img.save_png(&r.join("data/train/clean/rain_clean-3.png")).unwrap();
                a
            },
        ),
        row(
            "zero-byte PNG",
            &["snow-4.png", "empty file (0 bytes)", "re-copy or delete"],
            |r, fx| {
                let a = fx.train(r, &[]);
                write(&r.join("data/train/degraded/snow-4.png"), b"");
                a
            },
        ),
        row(
            "text file named .png",
            &["snow_clean-5.png", "not a readable image", "re-copy or delete"],
            |r, fx| {
                let a = fx.train(r, &[]);
                write(&r.join("data/train/clean/snow_clean-5.png"), b"hello, not a png\n");
                a
            },
        ),
        row(
            "patch larger than the images",
            &["smaller than train.patch_size 64", "lower train.patch_size"],
            |r, fx| fx.train(r, &["--set", "train.patch_size=64"]),
        ),
        row(
            "batch larger than the pairs",
            &["train.batch_size is 64", "lower train.batch_size"],
            |r, fx| fx.train(r, &["--set", "train.batch_size=64"]),
        ),
        // ---- train --resume ----
        row("resume an unknown run", &["--resume ghost", "no run there"], |r, fx| {
            let mut a = fx.resume(r, &[]);
            a[2] = "ghost".into();
            a
        }),
        row(
            "resume with a changed model",
            &["--resume r", "model.dim: 16 (the run's: 8)", "start a new run"],
            |r, fx| fx.resume(r, &["--set", "model.dim=16"]),
        ),
        row(
            "resume with another batch size",
            &["--resume r", "steps in epoch", "train.batch_size"],
            |r, fx| fx.resume(r, &["--set", "train.batch_size=1"]),
        ),
        row("resume from a truncated file", &["last.safetensors", "truncated"], |r, fx| {
            let a = fx.resume(r, &[]);
            let p = r.join("weights/r/last.safetensors");
            let bytes = std::fs::read(&p).unwrap();
            write(&p, &bytes[..bytes.len() / 2]);
            a
        }),
        row(
            "resume from another config's checkpoint",
            &["last.safetensors", "another model config"],
            |r, fx| {
                let a = fx.resume(r, &[]);
                let p = r.join("weights/r/last.safetensors");
                let meta = TensorFile::open(&p).unwrap().metadata();
                let cfg = ModelConfig { dim: 16, ..ModelConfig::tiny() };
                let vs = nn::VarStore::new(Device::Cpu);
                let _m = PromptIr::new(&vs.root(), &cfg);
                let t: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
                checkpoint::save_tensors(&p, &t, meta).unwrap();
                a
            },
        ),
        row(
            "resume before the first checkpoint",
            &["stopped before its first checkpoint", "without --resume"],
            |r, fx| {
                let a = fx.resume(r, &[]);
                std::fs::remove_file(r.join("weights/r/last.safetensors")).unwrap();
                a
            },
        ),
        // ---- predict ----
        row("truncated safetensors", &["trunc.safetensors", "truncated"], |r, fx| {
            let bytes = std::fs::read(fx.p("tiny.safetensors")).unwrap();
            write(&r.join("trunc.safetensors"), &bytes[..bytes.len() - 100]);
            fx.predict(&r.join("trunc.safetensors"), &fx.p("imgs"), &[])
        }),
        row("weights file missing", &["nope.safetensors", "check the path"], |r, fx| {
            fx.predict(&r.join("nope.safetensors"), &fx.p("imgs"), &[])
        }),
        row(
            "metadata config not matching the tensors",
            &[
                "metadata does not match the tensors",
                "dim: metadata 16, tensors 8",
                "use another checkpoint",
            ],
            |r, fx| {
                rewrite(&fx.p("tiny.safetensors"), &r.join("edited.safetensors"), "", |m| {
                    set_config_key(m, "dim", 16.into())
                });
                fx.predict(&r.join("edited.safetensors"), &fx.p("imgs"), &[])
            },
        ),
        row(
            "absurd config in metadata",
            &["invalid model config in metadata", "model.dim must be in 1..=4096"],
            |r, fx| {
                rewrite(&fx.p("tiny.safetensors"), &r.join("huge.safetensors"), "", |m| {
                    set_config_key(m, "dim", 1_000_000.into())
                });
                fx.predict(&r.join("huge.safetensors"), &fx.p("imgs"), &[])
            },
        ),
        row(
            "input folder missing",
            &["missing", "input folder does not exist", "--input"],
            |r, fx| fx.predict(&fx.p("tiny.safetensors"), &r.join("missing"), &[]),
        ),
        row("text file named .png in the input", &["in/1.png", "not a readable image"], |r, fx| {
            crate::common::copy_dir(&fx.p("imgs"), &r.join("in"));
            write(&r.join("in/1.png"), b"not an image");
            fx.predict(&fx.p("tiny.safetensors"), &r.join("in"), &[])
        }),
        row("output folder not writable", &["/proc", "not writable"], |_, fx| {
            let mut a = fx.predict(&fx.p("tiny.safetensors"), &fx.p("imgs"), &[]);
            a[6] = "/proc/pred.npz".into();
            a
        }),
        // ---- import / inspect ----
        row("ckpt without state_dict", &["nostate.ckpt", "no state_dict"], |_, fx| {
            vec!["import".into(), s(&fx.p("nostate.ckpt")), "-o".into(), "out.safetensors".into()]
        }),
        row(
            "state_dict of another network",
            &["other.safetensors", "no key patch_embed.proj.weight", "PromptIR checkpoint"],
            |r, _| {
                let t =
                    vec![("fc.weight".to_string(), Tensor::zeros([2, 2], tch::kind::FLOAT_CPU))];
                checkpoint::save_tensors(&r.join("other.safetensors"), &t, BTreeMap::new())
                    .unwrap();
                vec![
                    "import".into(),
                    "other.safetensors".into(),
                    "-o".into(),
                    "out.safetensors".into(),
                ]
            },
        ),
        row("import output under a file", &["afile", "is a file"], |r, fx| {
            write(&r.join("afile"), b"x");
            vec![
                "import".into(),
                s(&fx.p("tiny.safetensors")),
                "-o".into(),
                "afile/out.safetensors".into(),
            ]
        }),
        row(
            "inspect a text file",
            &["notes.safetensors", "not a readable safetensors file"],
            |r, _| {
                write(&r.join("notes.safetensors"), b"just some notes\n");
                vec!["inspect".into(), "notes.safetensors".into()]
            },
        ),
        // ---- eval / visualize ----
        row("eval: data folder missing", &["nodata", "dataset root does not exist"], |r, fx| {
            fx.score(r, "eval", &["--data", "nodata"])
        }),
        row("eval: no test split", &["test/degraded", "missing folder"], |r, fx| {
            fx.score(r, "eval", &["--split", "test"])
        }),
        row("eval: val fraction 1.5", &["--val-fraction 1.5", "below 1"], |r, fx| {
            fx.score(r, "eval", &["--val-fraction", "1.5"])
        }),
        row(
            "eval: unknown split",
            &["invalid value 'bogus' for '--split <SPLIT>'", "val, train, test"],
            |r, fx| fx.score(r, "eval", &["--split", "bogus"]),
        ),
        row("eval: report under a file", &["afile", "is a file"], |r, fx| {
            write(&r.join("afile"), b"x");
            fx.score(r, "eval", &["--output", "afile/eval.json"])
        }),
        row("visualize: folder under a file", &["afile", "is a file"], |r, fx| {
            write(&r.join("afile"), b"x");
            fx.score(r, "visualize", &["--output", "afile/panels"])
        }),
        // ---- synth ----
        row("synth: output not empty", &["not empty", "pick a new folder"], |r, fx| {
            crate::common::copy_dir(&fx.p("imgs"), &r.join("out"));
            synth(&["-o", "out"])
        }),
        row("synth: size 3", &["--size must be in 16..=4096, got 3"], |_, _| {
            synth(&["-o", "out", "--size", "3"])
        }),
        row("synth: output under a file", &["afile", "is a file"], |r, _| {
            write(&r.join("afile"), b"x");
            synth(&["-o", "afile/out"])
        }),
        row("synth: text file as a photo", &["photos/1.png", "not a readable image"], |r, fx| {
            crate::common::copy_dir(&fx.p("imgs"), &r.join("photos"));
            write(&r.join("photos/1.png"), b"not a photo");
            synth(&["-o", "out", "--clean-dir", "photos"])
        }),
    ]
}

/// What one row printed, for the failure report and the table printed with --nocapture.
struct Outcome {
    name: &'static str,
    stderr: String,
    problems: Vec<String>,
}

fn check_row(i: usize, r: &Row, fx: &Fixture, base: &Path) -> Outcome {
    let dir = base.join(format!("row{i:02}"));
    std::fs::create_dir_all(&dir).unwrap();
    let args = (r.setup)(&dir, fx);
    let before = crate::common::snapshot(&dir);
    let out = promptir(&dir).args(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let mut problems = Vec::new();
    if out.status.code() != Some(2) {
        problems.push(format!("exit {:?}, expected 2", out.status.code()));
    }
    // libtorch may print its own `[W ...]` warnings on some CPUs; those are not ours.
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.starts_with("[W")).collect();
    if lines.len() != 1 || !lines[0].starts_with("error: ") {
        problems.push(format!("expected one `error:` line, got {}", lines.len()));
    }
    for bad in ["panicked", "backtrace", "RUST_BACKTRACE", "frame #", "internal error"] {
        if stderr.contains(bad) {
            problems.push(format!("stderr contains {bad:?}"));
        }
    }
    for e in r.expect {
        if !stderr.contains(e) {
            problems.push(format!("stderr lacks {e:?}"));
        }
    }
    let after = crate::common::snapshot(&dir);
    if after != before {
        let changed: Vec<_> = after
            .iter()
            .filter(|(k, v)| before.get(*k) != Some(v))
            .map(|(k, _)| k.display().to_string())
            .chain(
                before
                    .keys()
                    .filter(|k| !after.contains_key(*k))
                    .map(|k| format!("-{}", k.display())),
            )
            .collect();
        problems.push(format!("the folder changed: {changed:?}"));
    }
    Outcome { name: r.name, stderr, problems }
}

#[test]
fn bad_inputs_exit_2_with_one_line_and_write_nothing() {
    let fx = fixture();
    let fixture_before = crate::common::snapshot(&fx.root);
    let base = tempfile::tempdir().unwrap();
    let rows = rows();
    assert!(rows.len() >= 25);
    let next = AtomicUsize::new(0);
    let outcomes = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..3 {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(r) = rows.get(i) else { break };
                let o = check_row(i, r, fx, base.path());
                outcomes.lock().unwrap().push((i, o));
            });
        }
    });
    let mut outcomes = outcomes.into_inner().unwrap();
    outcomes.sort_by_key(|(i, _)| *i);
    let mut failures = Vec::new();
    for (i, o) in &outcomes {
        println!("{i:02} {:<42} {}", o.name, o.stderr.trim_end());
        if !o.problems.is_empty() {
            failures.push(format!(
                "{} ({}): {}\n  stderr: {}",
                o.name,
                i,
                o.problems.join("; "),
                o.stderr
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        rows.len(),
        failures.join("\n")
    );
    assert_eq!(
        crate::common::snapshot(&fx.root),
        fixture_before,
        "rows must not change the shared fixture"
    );
}

#[test]
fn an_existing_run_name_without_resume_makes_a_new_run() {
    let fx = fixture();
    let dir = tempfile::tempdir().unwrap();
    crate::common::copy_dir(&fx.p("run"), dir.path());
    let old = crate::common::snapshot(&dir.path().join("logs/r"));
    let old_w = crate::common::snapshot(&dir.path().join("weights/r"));
    let a = fx.train(dir.path(), &["--set", "train.max_steps=1", "--name", "r"]);
    let out = promptir(dir.path()).args(&a).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        crate::common::snapshot(&dir.path().join("logs/r")),
        old,
        "the old run's logs changed"
    );
    assert_eq!(
        crate::common::snapshot(&dir.path().join("weights/r")),
        old_w,
        "the old run's weights changed"
    );
    let runs: Vec<String> = std::fs::read_dir(dir.path().join("weights"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(runs.iter().any(|r| r.starts_with("r_")), "{runs:?}");
}

// ---------------------------------------------------------------- kill -9 ----

const SAVE_LOOP_ENV: &str = "PROMPTIR_TEST_SAVE_LOOP";

/// The child of `kill_9_during_saves_never_breaks_the_last_checkpoint`: saves the tiny model
/// to `$PROMPTIR_TEST_SAVE_LOOP` forever, every weight set to the save's number `i` (stored in
/// the metadata), so that a torn or mixed file would show.
#[test]
#[ignore = "a child process of kill_9_during_saves_never_breaks_the_last_checkpoint"]
fn save_loop_child() {
    let Some(path) = std::env::var_os(SAVE_LOOP_ENV) else { return };
    let cfg = ModelConfig::tiny();
    let vs = nn::VarStore::new(Device::Cpu);
    let _m = PromptIr::new(&vs.root(), &cfg);
    let start: i64 = std::env::var("PROMPTIR_TEST_SAVE_FROM").unwrap().parse().unwrap();
    for i in start.. {
        tch::no_grad(|| {
            for mut v in vs.variables().into_values() {
                let _ = v.fill_(i as f64);
            }
        });
        let meta = checkpoint::CheckpointMeta::new(cfg.clone());
        checkpoint::save_model(&vs, &meta, Path::new(&path)).unwrap();
        println!("saved {i}");
    }
}

#[test]
fn kill_9_during_saves_never_breaks_the_last_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("last.safetensors");
    let mut last_i = -1i64;
    let mut torn_writes = 0;
    let mut rng = 0x2545f4914f6cdd1du64;
    for round in 0..6 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "reliability::save_loop_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(SAVE_LOOP_ENV, &path)
            .env("PROMPTIR_TEST_SAVE_FROM", (last_i + 1).to_string())
            .env("OMP_NUM_THREADS", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.find_map(|l| l.ok().filter(|l| l.starts_with("saved ")));
        assert!(first.is_some(), "round {round}: the child never saved");
        // Let it save a few more times, then kill it at a random moment.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        std::thread::sleep(Duration::from_micros(rng % 40_000));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // The child's temp file is left when the kill landed inside a save.
        torn_writes +=
            usize::from(dir.path().join(format!(".last.safetensors.tmp-{}", child.id())).exists());
        let loaded = checkpoint::load_model(&path, Device::Cpu)
            .unwrap_or_else(|e| panic!("round {round}: the last checkpoint does not load: {e}"));
        // Every weight of save i holds the value i.
        let i = f64::try_from(loaded.vs.variables()["output.weight"].max()).unwrap() as i64;
        assert!(i > last_i, "round {round}: no progress ({i} after {last_i})");
        for (k, v) in loaded.vs.variables() {
            let (lo, hi) = (f64::try_from(v.min()).unwrap(), f64::try_from(v.max()).unwrap());
            assert!(
                lo == i as f64 && hi == i as f64,
                "round {round}: {k} holds {lo}..{hi}, not save {i}"
            );
        }
        last_i = i;
    }
    println!("{torn_writes} of 6 kills landed inside a save (left its temp file)");
    // Whether a kill landed inside a save is chance; one stale temp file is certain (the
    // largest pid_max is 4194304, so no process has that id).
    std::fs::write(dir.path().join(".last.safetensors.tmp-4194304"), b"torn").unwrap();
    promptir::io::remove_stale_temps(dir.path());
    let left: Vec<_> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(left, ["last.safetensors"], "stale temp files are swept");
}

/// Waits until `path` exists with a modification time after `after` (or panics).
fn wait_for_save(
    path: &Path,
    after: Option<std::time::SystemTime>,
    child: &mut std::process::Child,
) {
    let t0 = Instant::now();
    loop {
        let m = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        if m.is_some() && (after.is_none() || m > after) {
            return;
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!("training exited ({st}) before saving {}", path.display());
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "no save within 120 s");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn a_run_killed_twice_resumes_to_the_same_weights() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    crate::common::paired_dataset(&d.join("data"));
    let tiny = crate::common::repo().join("experiments/tiny.yaml");
    std::fs::write(
        d.join("exp.yaml"),
        format!(
            "extends: {}\ndata: {{val_fraction: 0.25, workers: 1}}\n\
             train: {{epochs: 8, batch_size: 2, patch_size: 16, val_every: 2, log_every: 1, val_images: 0}}\n",
            tiny.display()
        ),
    )
    .unwrap();
    let train = |extra: &[&str]| {
        let mut c = promptir(d);
        c.args(["train", "--quiet"]).args(extra);
        c.stdout(Stdio::piped()).stderr(Stdio::piped());
        c
    };
    // The reference: the same run without interruption, alongside.
    let full =
        train(&["--config", "exp.yaml", "--data", "data", "--name", "full"]).spawn().unwrap();

    let resume_file = d.join("weights/k/last.safetensors");
    let mut killed = 0;
    for (round, delay_ms) in [(0, 60), (1, 20)] {
        let mut child = if round == 0 {
            train(&["--config", "exp.yaml", "--data", "data", "--name", "k"]).spawn().unwrap()
        } else {
            train(&["--resume", "k"]).spawn().unwrap()
        };
        let before = std::fs::metadata(&resume_file).and_then(|m| m.modified()).ok();
        wait_for_save(&resume_file, before, &mut child);
        std::thread::sleep(Duration::from_millis(delay_ms));
        if child.try_wait().unwrap().is_none() {
            killed += 1;
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let out = train(&["--resume", "k"]).output().unwrap();
    assert!(out.status.success(), "resume after kill -9: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("finished run k after 8 epochs / 32 steps"), "{text}");
    let full = full.wait_with_output().unwrap();
    assert!(full.status.success(), "{}", String::from_utf8_lossy(&full.stderr));
    let (a, b) = (
        tensors(&d.join("weights/full/last.safetensors")),
        tensors(&d.join("weights/k/last.safetensors")),
    );
    assert_eq!(a.len(), b.len());
    let mut worst = 0.0f64;
    for ((ka, ta), (kb, tb)) in a.iter().zip(&b) {
        assert_eq!(ka, kb);
        let diff = f64::try_from((ta - tb).abs().max()).unwrap();
        worst = worst.max(diff);
    }
    println!("killed-and-resumed vs uninterrupted: max |diff| = {worst:e}");
    assert_eq!(worst, 0.0, "the killed-and-resumed run differs");
    assert_eq!(killed, 2, "a kill came after the run had ended");
    let left: Vec<_> = std::fs::read_dir(d.join("weights/k"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp-"))
        .collect();
    assert!(left.is_empty(), "temp files left after resuming: {left:?}");
}

// ------------------------------------------------------------- properties ----

/// Values that stress typing and ranges.
fn yaml_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|v| v.to_string()),
        any::<f64>().prop_map(|v| format!("{v:e}")),
        Just(".nan".to_string()),
        Just("-.inf".to_string()),
        Just("~".to_string()),
        Just("[1, 2".to_string()),
        Just("{a: b}".to_string()),
        Just("[]".to_string()),
        Just("true".to_string()),
        Just("\"\"".to_string()),
        Just("18446744073709551616".to_string()),
        Just("&a [*a]".to_string()),
        "[a-z_.]{0,12}",
        "[ -~]{0,16}",
    ]
}

/// Real keys and near misses.
fn yaml_key() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "seed",
            "device",
            "name",
            "model.dim",
            "model.num_blocks",
            "model.heads",
            "model.ffn_expansion_factor",
            "model.prompt_sizes",
            "model.prompt_len",
            "model.inp_channels",
            "model.layer_norm_type",
            "data.root",
            "data.workers",
            "data.val_fraction",
            "train.lr",
            "train.patch_size",
            "train.batch_size",
            "train.epochs",
            "train.max_steps",
            "train.betas",
            "train.max_epochs",
            "train.warmup_epochs",
            "train.grad_clip",
            "train.precision",
            "train.schedule_unit",
            "loss.l1",
            "loss.perceptual",
            "loss.perceptual_layers",
            "augment.hflip",
            "augment.blur.sigma",
            "augment.erase.scale",
            "augment.rotate",
            "extends",
            "model",
        ])
        .prop_map(String::from),
        "[a-z]{1,6}(\\.[a-z_]{1,8}){0,3}",
    ]
}

fn exp_file() -> &'static (tempfile::TempDir, PathBuf, String) {
    static F: OnceLock<(tempfile::TempDir, PathBuf, String)> = OnceLock::new();
    F.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.yaml");
        let tiny = crate::common::repo().join("experiments/tiny.yaml");
        std::fs::write(&p, format!("extends: {}\n", tiny.display())).unwrap();
        let text = Experiment::load(&p, &[]).unwrap().to_yaml();
        (dir, p, text)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn random_set_overrides_never_panic(sets in prop::collection::vec((yaml_key(), yaml_value()), 1..4)) {
        let (_, path, _) = exp_file();
        let sets: Vec<String> = sets.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = Experiment::load(path, &sets);
    }

    #[test]
    fn mutated_yaml_text_never_panics(
        cut in any::<prop::sample::Index>(),
        len in 0usize..40,
        insert in prop_oneof![yaml_value(), (yaml_key(), yaml_value()).prop_map(|(k, v)| format!("\n{k}: {v}\n")), "[\\x00-\\x7f]{0,8}"],
    ) {
        let (_, path, text) = exp_file();
        let at = cut.index(text.len() + 1);
        let end = (at + len).min(text.len());
        let mutated = format!("{}{insert}{}", &text[..at], &text[end..]);
        let _ = Experiment::from_yaml_str(&mutated, path);
    }

    #[test]
    fn damaged_checkpoints_never_panic(
        mode in 0u8..5,
        entry in any::<prop::sample::Index>(),
        field in 0u8..4,
        shape in prop::collection::vec(0i64..70, 0..5),
        dtype in prop::sample::select(vec!["F32", "F16", "BF16", "F64", "I64", "I32", "U8", "BOOL", "I8", "F8_E4M3", "X"]),
        pos in any::<prop::sample::Index>(),
        bits in prop::collection::vec((any::<prop::sample::Index>(), 0u8..8), 1..5),
        noise in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let (dir, base) = ckpt_bytes();
        let header_end = 8 + u64::from_le_bytes(base[..8].try_into().unwrap()) as usize;
        let bytes: Vec<u8> = match mode {
            0 => base[..pos.index(base.len())].to_vec(), // truncated
            1 => {
                // bit flips in the JSON header (names, dtypes, shapes, offsets, metadata)
                let mut b = base.clone();
                for (i, bit) in &bits {
                    b[i.index(header_end)] ^= 1 << bit;
                }
                b
            }
            2 => {
                // a random header length
                let mut b = base.clone();
                b[..8].copy_from_slice(&noise.iter().chain([0u8; 8].iter()).take(8).copied().collect::<Vec<_>>());
                b
            }
            3 => noise, // random bytes
            _ => edit_header(base, |h| {
                // one well-formed but wrong field: a shape, a dtype, offsets or a name
                let m = h.as_object_mut().unwrap();
                let names: Vec<String> = m.keys().filter(|k| *k != "__metadata__").cloned().collect();
                let name = &names[entry.index(names.len())];
                let e = &mut m[name.as_str()];
                match field {
                    0 => e["shape"] = shape.into(),
                    1 => e["dtype"] = dtype.into(),
                    2 => e["data_offsets"] = serde_json::json!([noise.len(), noise.len() * 64]),
                    _ => {
                        let v = m.remove(name).unwrap();
                        m.insert(format!("{name}x"), v);
                    }
                }
            }),
        };
        let p = dir.path().join(format!("case-{}.safetensors", COUNTER.fetch_add(1, Ordering::SeqCst)));
        std::fs::write(&p, &bytes).unwrap();
        if let Ok(f) = TensorFile::open(&p) {
            let _ = (f.metadata(), f.header(), checkpoint::CheckpointMeta::read(&f));
            let _ = checkpoint::load_model(&p, Device::Cpu);
        }
        std::fs::remove_file(&p).unwrap();
    }

    #[test]
    fn random_metadata_configs_never_panic(
        key in prop::sample::select(vec![
            "inp_channels", "out_channels", "dim", "num_blocks", "num_refinement_blocks", "heads",
            "ffn_expansion_factor", "bias", "layer_norm_type", "prompt_len", "prompt_dims", "prompt_sizes", "nope",
        ]),
        value in prop_oneof![
            any::<i64>().prop_map(serde_json::Value::from),
            (-1e12f64..1e12).prop_map(serde_json::Value::from),
            prop::collection::vec(any::<i32>(), 0..5).prop_map(serde_json::Value::from),
            prop::collection::vec(0i64..64, 3..5).prop_map(serde_json::Value::from),
            "[a-z_]{0,10}".prop_map(serde_json::Value::from),
        ],
    ) {
        let (dir, base) = ckpt_bytes();
        let p = dir.path().join(format!("meta-{}.safetensors", COUNTER.fetch_add(1, Ordering::SeqCst)));
        let bytes = edit_header(base, |h| {
            let meta = h["__metadata__"].as_object_mut().unwrap();
            let mut cfg: serde_json::Value =
                serde_json::from_str(meta[checkpoint::CONFIG_KEY].as_str().unwrap()).unwrap();
            cfg[key] = value;
            meta.insert(checkpoint::CONFIG_KEY.into(), cfg.to_string().into());
        });
        std::fs::write(&p, bytes).unwrap();
        let _ = checkpoint::load_model(&p, Device::Cpu);
        std::fs::remove_file(&p).unwrap();
    }
}

/// A safetensors file's bytes with its JSON header edited (data offsets are relative to the
/// data section, so they stay valid).
fn edit_header(bytes: &[u8], edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let mut h: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    edit(&mut h);
    let text = serde_json::to_vec(&h).unwrap();
    let mut out = (text.len() as u64).to_le_bytes().to_vec();
    out.extend(text);
    out.extend(&bytes[8 + n..]);
    out
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn ckpt_bytes() -> &'static (tempfile::TempDir, Vec<u8>) {
    static B: OnceLock<(tempfile::TempDir, Vec<u8>)> = OnceLock::new();
    B.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("base.safetensors");
        write_tiny_checkpoint(&p, &ModelConfig::tiny());
        let bytes = std::fs::read(&p).unwrap();
        (dir, bytes)
    })
}
