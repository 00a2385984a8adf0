//! The bad-input table: each row prepares its folder and gives the arguments of one command
//! that must fail, with the substrings its one error line must hold.

use super::fixture::{s, Fixture};
use crate::common::tensors;
use promptir::io::{self as checkpoint, TensorFile};
use promptir::model::{ModelConfig, Network, PromptIrConfig};
use std::collections::BTreeMap;
use std::path::Path;
use tch::{nn, Device, Tensor};

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

type Setup = fn(&Path, &Fixture) -> Vec<String>;

/// One bad input: `setup` prepares the row's folder (the command's working directory) and
/// returns the arguments; stderr must contain every `expect` substring.
pub(super) struct Row {
    pub(super) name: &'static str,
    pub(super) setup: Setup,
    pub(super) expect: &'static [&'static str],
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

pub(super) fn rows() -> Vec<Row> {
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
        row(
            "a network term for a network without it",
            &["loss.balance", "model.arch promptir does not have", "set it to 0"],
            |r, fx| fx.train(r, &["--set", "loss.balance=0.01"]),
        ),
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
            "resume with another arch",
            &[
                "--resume r",
                "model.arch: \"restormer\" (the run's: \"promptir\")",
                "start a new run",
            ],
            |r, fx| {
                let restormer = crate::common::repo().join("experiments/tiny_restormer.yaml");
                fx.resume(r, &["--config", restormer.to_str().unwrap()])
            },
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
                let cfg =
                    ModelConfig::Promptir(PromptIrConfig { dim: 16, ..PromptIrConfig::tiny() });
                let vs = nn::VarStore::new(Device::Cpu);
                let _m = Network::new(&vs.root(), &cfg);
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
            &[
                "other.safetensors",
                "match no architecture",
                "promptir: no key patch_embed.proj.weight",
            ],
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
