//! The training tools around the step: gradient accumulation, the weights' moving average,
//! checkpoint retention and progressive patches, each on the tiny set of `train.rs`.

use crate::train::{weights, Env};
use promptir::config::{EmaConfig, Experiment};
use promptir::io::{load_model_choosing, EmaChoice, TensorFile, EMA_PREFIX};
use promptir::train::{train, Ema, TrainArgs, TrainStep};
use serde_json::Value;
use std::path::Path;
use tch::{Device, Tensor};

fn max_diff(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|((ka, x), (kb, y))| {
            assert_eq!(ka, kb);
            f64::try_from((x - y).abs().max()).unwrap()
        })
        .fold(0.0, f64::max)
}

fn run(env: &Env, name: &str, sets: &[&str]) -> promptir::train::TrainSummary {
    train(&TrainArgs { name: Some(name.into()), ..env.args(sets) }).unwrap()
}

/// `train --resume name` with `sets`.
fn resume(env: &Env, name: &str, sets: &[&str]) -> promptir::train::TrainSummary {
    train(&TrainArgs { config: None, resume: Some(name.into()), ..env.args(sets) }).unwrap()
}

#[test]
fn accumulation_equals_a_batch_that_many_times_larger() {
    let env = Env::new();
    // 8 train pairs: batch 4 gives 2 steps an epoch, as batch 2 accumulated twice does, over the
    // same pairs (the order and each crop depend on the pair, not on the batch).
    let big = run(&env, "big", &["train.batch_size=4"]);
    let acc = run(&env, "acc", &["train.accumulate=2"]);
    let one = run(&env, "one", &[]);
    assert_eq!((big.state.step, acc.state.step, one.state.step), (4, 4, 8));
    let last = |s: &promptir::train::TrainSummary| {
        let mut w = weights(&s.run.checkpoint("last"));
        w.retain(|(k, _)| promptir::io::is_weight_key(k)); // not the optimizer's step counts
        w
    };
    let d = max_diff(&last(&big), &last(&acc));
    let moved = max_diff(&last(&big), &last(&one));
    eprintln!("accumulate 2 x batch 2 vs batch 4 after 4 steps: max |diff| {d:e} (batch 2 alone: {moved:e})");
    // AdamW divides by the root of the squared gradients' average, so where a gradient is
    // tiny a rounding difference in it moves the update by a fraction of lr (1e-3): the
    // gradients themselves are compared tightly in the next test.
    assert!(d <= 5e-5, "accumulated run differs by {d:e}");
    assert!(moved > 100.0 * d.max(1e-7), "the comparison can fail: {moved:e}");
    // The mean training loss is the mean over the micro-batches.
    let loss = |s: &promptir::train::TrainSummary| {
        let m = promptir::train::read_metrics(&s.run.logs.join("metrics.jsonl")).unwrap();
        m.last().unwrap().train_loss.unwrap()
    };
    assert!((loss(&big) - loss(&acc)).abs() < 1e-5, "{} vs {}", loss(&big), loss(&acc));
    // A resume point knows its accumulation.
    let e = train(&TrainArgs {
        config: None,
        resume: Some("acc".into()),
        ..env.args(&["train.accumulate=1", "train.epochs=3"])
    })
    .unwrap_err();
    assert!(e.to_string().contains("accumulate"), "{e}");
    let e = train(&TrainArgs { name: Some("x".into()), ..env.args(&["train.accumulate=5"]) })
        .unwrap_err();
    assert!(e.to_string().contains("train.accumulate is 5 but an epoch has only 4 batches"), "{e}");
}

/// Also for MoCE-IR: each image gets the same routing noise in a micro-batch as in the whole
/// batch (its experts then get gradients from the same images).
#[test]
fn accumulated_gradients_equal_the_large_batch_gradients() {
    use promptir::model::{Arch, ModelConfig};
    for arch in [Arch::Promptir, Arch::MoceIr] {
        let exp = Experiment { model: ModelConfig::tiny_of(arch), ..Experiment::default() };
        let (mut big, mut acc) = (
            TrainStep::new(&exp, Device::Cpu).unwrap(),
            TrainStep::new(&exp, Device::Cpu).unwrap(),
        );
        let x = promptir::model::with_global_rng(|| {
            tch::manual_seed(3);
            Tensor::rand([8, 3, 32, 32], (tch::Kind::Float, Device::Cpu))
        });
        let y = x.flip([3]) * 0.8;
        // lr 0: the gradients stay in the variables and the weights do not move.
        let a = big.step(&x, &y, 0.0, true).unwrap();
        let parts: Vec<(Tensor, Tensor)> =
            (0..4).map(|i| (x.narrow(0, 2 * i, 2), y.narrow(0, 2 * i, 2))).collect();
        let b = acc.step_accumulated(&parts, 0.0, true).unwrap();
        let la = f64::try_from(&a.terms.total).unwrap();
        let lb = f64::try_from(&b.terms.total).unwrap();
        assert!((la - lb).abs() <= 1e-6 * la, "{arch:?}: loss {la} vs mean of micro-batches {lb}");
        let (va, vb) = (big.vs.variables(), acc.vs.variables());
        let mut worst = 0.0f64;
        for (k, t) in &va {
            // MoCE-IR: an expert no image was routed to has no gradient, in both.
            assert_eq!(t.grad().defined(), vb[k].grad().defined(), "{arch:?} {k}");
            if t.grad().defined() {
                // Relative to the gradient's scale, or to 1e-6 for gradients that are zero up to
                // rounding (~1e-13): MoCE-IR's router and frequency embedding get none from L1
                // at top 1, its cross-attention normalising away the one gate per image.
                let (ga, gb) = (t.grad(), vb[k].grad());
                let scale = f64::try_from(ga.abs().max()).unwrap().max(1e-6);
                worst = worst.max(crate::common::max_abs_diff(&ga, &gb) / scale);
            }
        }
        eprintln!(
            "{arch:?}: accumulate 4 x 2 vs batch 8: gradients' max |diff| / max |grad| = {worst:e}"
        );
        assert!(worst <= 1e-5, "{arch:?}: {worst:e}");
    }
}

#[test]
fn ema_follows_its_formula_on_the_device_tensors() {
    let exp = Experiment { model: promptir::model::ModelConfig::tiny(), ..Experiment::default() };
    let mut step = TrainStep::new(&exp, Device::Cpu).unwrap();
    let cfg = EmaConfig { decay: 0.9, start_step: 2 };
    let ema = Ema::new(&cfg, &exp.model, &step.vs, Device::Cpu).unwrap();
    assert!(Ema::new(&EmaConfig::default(), &exp.model, &step.vs, Device::Cpu).is_none());
    let host = |vs: &tch::nn::VarStore| {
        let mut v: Vec<(String, Tensor)> =
            vs.variables().into_iter().map(|(k, t)| (k, t.detach().copy())).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let mut want = host(&step.vs);
    let x = tch::Tensor::rand([2, 3, 32, 32], (tch::Kind::Float, Device::Cpu));
    let y = &x * 0.5;
    for k in 1..=5 {
        step.step(&x, &y, 1e-3, true).unwrap();
        ema.update(k).unwrap();
        let w = host(&step.vs);
        for ((_, m), (_, w)) in want.iter_mut().zip(&w) {
            *m = if k <= 2 { w.copy() } else { &*m * 0.9 + w * 0.1 };
        }
        let got: Vec<(String, Tensor)> = {
            let mut g: Vec<(String, Tensor)> = ema
                .tensors()
                .into_iter()
                .map(|(k, t)| (k.strip_prefix(EMA_PREFIX).unwrap().to_string(), t))
                .collect();
            g.sort_by(|a, b| a.0.cmp(&b.0));
            g
        };
        let d = max_diff(&got, &want);
        assert!(d <= 1e-6, "step {k}: ema differs from its formula by {d:e}");
        if k > 2 {
            assert!(max_diff(&got, &w) > 1e-6, "step {k}: the average is not the weights");
        }
    }
}

fn eval_psnr(best: &Path, data: &Path, ema: &str) -> f64 {
    let out = crate::common::promptir()
        .args(["eval", "--device", "cpu", "--format", "json", "--ema", ema, "--weights"])
        .arg(best)
        .arg("--data")
        .arg(data)
        .output()
        .unwrap();
    let j: Value = serde_json::from_str(&crate::common::ok(out)).unwrap();
    j["psnr"]["all"].as_f64().unwrap()
}

#[test]
fn ema_is_validated_saved_resumed_and_chosen_by_predict_and_eval() {
    let env = Env::new();
    let ema = ["train.ema={decay: 0.8, start_step: 1}", "train.epochs=3"];
    let full = run(&env, "full", &[&ema[..], &["train.max_steps=10"]].concat());
    let half = run(&env, "half", &[&ema[..], &["train.max_steps=5"]].concat());
    assert_eq!(half.state.step, 5);
    let resumed = resume(&env, "half", &["train.max_steps=10"]);
    assert_eq!(resumed.state.step, 10);
    // The whole resume point, moving average included, as if never stopped.
    let (a, b) = (weights(&full.run.checkpoint("last")), weights(&resumed.run.checkpoint("last")));
    let d = max_diff(&a, &b);
    assert!(d <= 1e-6, "resumed run differs by {d:e}");
    let n_ema = a.iter().filter(|(k, _)| k.starts_with(EMA_PREFIX)).count();
    let n_raw = a.iter().filter(|(k, _)| promptir::io::is_weight_key(k)).count();
    assert_eq!(n_ema, n_raw);

    // Validation scored the average: `eval` of `best` reproduces training's number with the
    // average (the default), not with the raw weights.
    let data = env.dir.path().join("data");
    let best = full.run.checkpoint("best");
    let metrics = promptir::train::read_metrics(&full.run.logs.join("metrics.jsonl")).unwrap();
    let best_line =
        metrics.iter().find(|m| Some(m.epoch) == full.state.best_epoch).expect("best epoch line");
    let logged = best_line.val.as_ref().unwrap().psnr_all().unwrap();
    // `--ema auto` (the default) is checked on the loader below.
    let (on, off) = (eval_psnr(&best, &data, "on"), eval_psnr(&best, &data, "off"));
    eprintln!("best: logged {logged}, eval ema {on}, raw {off}");
    assert!((on - logged).abs() < 1e-9, "{on} vs {logged}");
    assert!((off - on).abs() > 1e-6, "raw and averaged weights score alike: {off}");

    // The choice at loading: the file's `ema.*` tensors or its raw ones.
    let file = TensorFile::open(&best).unwrap();
    let pick = |c| load_model_choosing(&best, Device::Cpu, c).unwrap();
    let (m_on, m_off) = (pick(EmaChoice::On), pick(EmaChoice::Off));
    assert!(m_on.ema && !m_off.ema && pick(EmaChoice::Auto).ema);
    for (k, t) in m_on.vs.variables() {
        let want = file.tensor(&format!("{EMA_PREFIX}{k}")).unwrap();
        assert!(t.equal(&want), "{k}");
        assert!(m_off.vs.variables()[&k].equal(&file.tensor(&k).unwrap()), "{k}");
    }
    let plain = run(&env, "plain", &["train.max_steps=2"]).run.checkpoint("last");
    let e = load_model_choosing(&plain, Device::Cpu, EmaChoice::On).unwrap_err().to_string();
    assert!(e.contains("no moving average") && e.contains("--ema off"), "{e}");
    assert!(!load_model_choosing(&plain, Device::Cpu, EmaChoice::Auto).unwrap().ema);
}

#[test]
fn retention_keeps_the_newest_epochs_and_the_best_validations() {
    let env = Env::new();
    let s = run(
        &env,
        "keep",
        &["train.epochs=4", "train.save_every=1", "train.keep_last=2", "train.keep_best=2"],
    );
    let mut files: Vec<String> = std::fs::read_dir(&s.run.weights)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".safetensors"))
        .collect();
    files.sort();
    let metrics = promptir::train::read_metrics(&s.run.logs.join("metrics.jsonl")).unwrap();
    let mut by_psnr: Vec<(f64, usize)> =
        metrics.iter().map(|m| (m.val.as_ref().unwrap().psnr_all().unwrap(), m.epoch)).collect();
    by_psnr.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut want: Vec<String> =
        ["best", "epoch_3", "epoch_4", "last"].iter().map(|n| format!("{n}.safetensors")).collect();
    want.extend(by_psnr[..2].iter().map(|(_, e)| format!("best_epoch_{e}.safetensors")));
    want.sort();
    assert_eq!(files, want, "validation PSNR by epoch: {by_psnr:?}");
    assert_eq!(
        s.state.kept_best.iter().map(|k| k.0).collect::<Vec<_>>(),
        [by_psnr[0].1, by_psnr[1].1]
    );

    // Resumed with keep_best 1: the ranking comes back from the resume point, and the folder
    // ends with the best validation alone.
    let r = resume(&env, "keep", &["train.epochs=6", "train.keep_best=1"]);
    let metrics = promptir::train::read_metrics(&r.run.logs.join("metrics.jsonl")).unwrap();
    let top = metrics
        .iter()
        .map(|m| (m.val.as_ref().unwrap().psnr_all().unwrap(), m.epoch))
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .unwrap();
    let bests: Vec<String> = std::fs::read_dir(&r.run.weights)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("best_epoch_"))
        .collect();
    assert_eq!(bests, [format!("best_epoch_{}.safetensors", top.1)], "{metrics:?}");
}

#[test]
fn progressive_stages_switch_batches_and_resume_exactly() {
    let env = Env::new();
    // 8 train pairs: 2 steps of 4 in epoch 1, then 4 of 2 at a larger patch.
    let stages = "train.stages=[{until_epoch: 1, patch_size: 16, batch_size: 4}, {until_epoch: 3, patch_size: 24, batch_size: 2}]";
    let full = run(&env, "full", &[stages, "train.epochs=3"]);
    assert_eq!(full.state.step, 2 + 4 + 4);
    let half = run(&env, "half", &[stages, "train.epochs=3", "train.max_steps=4"]);
    assert_eq!((half.state.step, half.state.epoch), (4, 1));
    let at_step_4 = weights(&half.run.checkpoint("last"));
    let resumed = resume(&env, "half", &["train.max_steps=10"]);
    assert_eq!(resumed.state.step, 10);
    let d =
        max_diff(&weights(&full.run.checkpoint("last")), &weights(&resumed.run.checkpoint("last")));
    assert_eq!(d, 0.0, "resumed across the stage boundary, the run differs");
    // The steps after the resume moved the weights, so the comparison above can fail.
    let mut moved_from = at_step_4;
    moved_from.retain(|(k, _)| promptir::io::is_weight_key(k));
    let mut end = weights(&full.run.checkpoint("last"));
    end.retain(|(k, _)| promptir::io::is_weight_key(k));
    assert!(max_diff(&moved_from, &end) > 1e-4);
}
