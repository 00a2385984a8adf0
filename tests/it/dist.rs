//! Data-parallel training on CPU with Gloo: two processes launched by the venv's torchrun (or by
//! hand, as a Slurm job script would) against one process with the same global batch, the files
//! a group writes, a rank that dies, and launches that cannot work.

use crate::common::{ok_printed, paired_dataset, promptir, repo, signal, tensors, user_error};
use promptir::config::Experiment;
use promptir::dist::{Group, Launch, ProcessGroup};
use promptir::io::TensorFile;
use promptir::train::TrainStep;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant};
use tch::{Device, Kind, Tensor};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A dataset (12 pairs: 8 to train, 4 to validate) and a tiny experiment in a new folder.
fn setup() -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    paired_dataset(&d.path().join("data"));
    std::fs::write(
        d.path().join("exp.yaml"),
        format!(
            "extends: {}\ndata: {{root: data, val_fraction: 0.25, workers: 1}}\n\
             train: {{epochs: 2, batch_size: 2, patch_size: 24, val_every: 1, log_every: 1, val_images: 1}}\n",
            repo().join("experiments/tiny.yaml").display()
        ),
    )
    .unwrap();
    d
}

/// `promptir train ARGS` on 2 processes through torchrun.
fn torchrun(dir: &Path, args: &[&str]) -> Output {
    Command::new(repo().join(".venv/bin/torchrun"))
        .current_dir(dir)
        .args(["--no-python", "--nproc-per-node", "2", "--master-port"])
        .arg(free_port().to_string())
        .arg(env!("CARGO_BIN_EXE_promptir"))
        .args(["train", "--quiet"])
        .args(args)
        .output()
        .unwrap()
}

/// The weights of a checkpoint (not the optimizer state).
fn weights(p: &Path) -> Vec<(String, tch::Tensor)> {
    tensors(p).into_iter().filter(|(k, _)| !k.starts_with("state.")).collect()
}

type Weights = Vec<(String, tch::Tensor)>;

/// The last weights of runs `a` and `b` (same keys, same order) and their largest difference.
fn max_weight_diff(dir: &Path, a: &str, b: &str) -> (Weights, Weights, f64) {
    let last = |run: &str| weights(&dir.join(format!("weights/{run}/last.safetensors")));
    let (a, b) = (last(a), last(b));
    assert_eq!(a.len(), b.len());
    let mut worst = 0.0f64;
    for ((ka, ta), (kb, tb)) in a.iter().zip(&b) {
        assert_eq!(ka, kb);
        worst = worst.max(f64::try_from((ta - tb).abs().max()).unwrap());
    }
    (a, b, worst)
}

fn files(dir: PathBuf) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn two_ranks_with_batch_2_equal_one_process_with_batch_4_also_across_a_resume() {
    let d = setup();
    let dir = d.path();
    ok_printed(
        promptir()
            .current_dir(dir)
            .args(["train", "--config", "exp.yaml", "--name", "one", "--quiet"])
            .args(["--set", "train.batch_size=4"])
            .output()
            .unwrap(),
    );
    // Two ranks: 2 steps, then a resume (again 2 ranks) to the end, 4 steps in all.
    let half = ok_printed(torchrun(
        dir,
        &["--config", "exp.yaml", "--name", "two", "--set", "train.max_steps=2"],
    ));
    assert!(half.contains("x 2 processes (global batch 4)"), "{half}");
    let out = ok_printed(torchrun(dir, &["--resume", "two", "--set", "train.max_steps=null"]));
    assert!(out.contains("finished run two after 2 epochs / 4 steps"), "{out}");
    let (_, b, worst) = max_weight_diff(dir, "one", "two");
    // Measured 4.4e-6 to 6.3e-6 (and 1.1e-5 over 8 steps at patch 32): the sum of two
    // half-batch means, halved, rounds differently from one mean over the batch, and Adam's
    // normalised steps carry such differences of near-zero gradient components into the
    // weights at up to lr.
    eprintln!(
        "2 ranks x batch 2 vs 1 process x batch 4, 4 steps with a resume: max |diff| = {worst:e}"
    );
    assert!(worst < 2e-5, "{worst}");
    // The resume itself changes nothing: the same 4 steps without a stop give the same bits.
    ok_printed(torchrun(dir, &["--config", "exp.yaml", "--name", "straight"]));
    let straight = weights(&dir.join("weights/straight/last.safetensors"));
    assert_eq!(straight.len(), b.len());
    for ((k, s), (_, t)) in straight.iter().zip(&b) {
        assert!(s.equal(t), "{k}: a resumed 2-rank run differs from a straight one");
    }
    // Validation: the same means (sharded over the ranks, sums reduced), so the same best.
    let metrics = |run: &str| {
        promptir::train::read_metrics(&dir.join(format!("logs/{run}/metrics.jsonl"))).unwrap()
    };
    let (m1, m2) = (metrics("one"), metrics("two"));
    assert_eq!((m1.len(), m2.len()), (2, 2), "one line per epoch");
    for (x, y) in m1.iter().zip(&m2) {
        let (px, py) = (
            x.val.as_ref().unwrap().psnr_all().unwrap(),
            y.val.as_ref().unwrap().psnr_all().unwrap(),
        );
        assert!((px - py).abs() < 1e-3, "epoch {}: {px} vs {py}", x.epoch);
        assert_eq!((x.val.as_ref().unwrap().count, y.val.as_ref().unwrap().count), (4, 4));
    }
    // One set of checkpoints and one events file, written by rank 0 alone.
    assert_eq!(
        files(dir.join("weights/two")),
        ["best.safetensors", "last.safetensors", "train_state.json"]
    );
    let logs = files(dir.join("logs/two"));
    assert_eq!(
        logs.iter().filter(|f| f.starts_with("events.out.tfevents")).count(),
        2,
        "one per launch: {logs:?}"
    );
    assert_eq!(logs.len(), 5, "config, metrics, run.lock and the events: {logs:?}");

    // Resumed by one process: a notice of what changes, then it continues.
    let out = ok_printed(
        promptir()
            .current_dir(dir)
            .args(["train", "--resume", "two", "--set", "train.epochs=3", "--quiet"])
            .output()
            .unwrap(),
    );
    assert!(
        out.contains("trained with 2 process(es), now 1")
            && out.contains("an epoch has 4 steps instead of 2"),
        "{out}"
    );
}

/// AdaIR on two ranks equals one process with the whole batch: its parameters that get no
/// gradient (modules upstream never runs, and `rate_conv`) are left out of the all-reduce on
/// both ranks alike (before, a missing gradient stopped data-parallel training), and end equal
/// bit for bit to the one process's.
#[test]
fn a_network_with_gradient_free_parameters_trains_on_two_ranks_as_on_one() {
    let d = setup();
    let dir = d.path();
    let adair = repo().join("experiments/tiny_adair.yaml");
    let exp = format!(
        "extends: {}\ndata: {{root: data, val_fraction: 0.25, workers: 1}}\n\
         train: {{epochs: 1, batch_size: 2, patch_size: 24, val_every: 1, log_every: 1, val_images: 0}}\n",
        adair.display()
    );
    std::fs::write(dir.join("adair.yaml"), exp).unwrap();
    let one = ["train", "--config", "adair.yaml", "--name", "one", "--quiet"];
    ok_printed(
        promptir()
            .current_dir(dir)
            .args(one)
            .args(["--set", "train.batch_size=4"])
            .output()
            .unwrap(),
    );
    ok_printed(torchrun(dir, &["--config", "adair.yaml", "--name", "two"]));
    let (a, b, worst) = max_weight_diff(dir, "one", "two");
    for ((k, ta), (_, tb)) in a.iter().zip(&b) {
        if k.contains(".score_gen.") || k.contains(".rate_conv.") || k.ends_with(".conv.weight") {
            assert!(ta.equal(tb), "{k}: no gradient, so no rounding may differ");
        }
    }
    eprintln!("AdaIR, 2 ranks x batch 2 vs 1 process x batch 4, 2 steps: max |diff| = {worst:e}");
    assert!(worst < 2e-5, "{worst}");
}

/// MoCE-IR on two ranks equals one process with the whole batch: each step's routing noise is
/// drawn for the whole batch from the step's seed and each rank takes its rows, so every image
/// is routed as in one process. The balance loss is a statistic of each rank's own batch (as
/// under upstream's DDP), so it is off here.
#[test]
fn moce_ir_routes_each_image_on_two_ranks_as_in_one_process() {
    let d = setup();
    let dir = d.path();
    let exp = format!(
        "extends: {}\ndata: {{root: data, val_fraction: 0.25, workers: 1}}\nloss: {{balance: 0.0}}\n\
         train: {{epochs: 1, batch_size: 2, patch_size: 24, val_every: 1, log_every: 1, val_images: 0}}\n",
        repo().join("experiments/tiny_moce_ir.yaml").display()
    );
    std::fs::write(dir.join("moce.yaml"), exp).unwrap();
    let one = ["train", "--config", "moce.yaml", "--name", "one", "--quiet"];
    let batch4 = ["--set", "train.batch_size=4"];
    ok_printed(promptir().current_dir(dir).args(one).args(batch4).output().unwrap());
    ok_printed(torchrun(dir, &["--config", "moce.yaml", "--name", "two"]));
    let (_, _, worst) = max_weight_diff(dir, "one", "two");
    eprintln!("MoCE-IR, 2 ranks x batch 2 vs 1 process x batch 4, 2 steps: max |diff| = {worst:e}");
    assert!(worst < 2e-5, "{worst}");
}

#[test]
fn a_run_with_stages_and_accumulation_resumes_on_another_number_of_processes() {
    let d = setup();
    let dir = d.path();
    // 8 train pairs; epoch 1 at batch 2, epochs 2-3 at batch 1; 2 micro-batches per step.
    let sets = [
        "--set",
        "train.stages=[{until_epoch: 1, patch_size: 16, batch_size: 2}, {until_epoch: 3, patch_size: 24, batch_size: 1}]",
        "--set",
        "train.accumulate=2",
        "--set",
        "train.epochs=3",
    ];
    // 2 ranks: 1 step in epoch 1 (8 / (2 x 2) = 2 batches), then 2 per epoch; stop after
    // step 2, one step (4 pairs) into epoch 2.
    let cfg = ["--config", "exp.yaml", "--name", "st", "--set", "train.max_steps=2"];
    let out = ok_printed(torchrun(dir, &[&cfg[..], &sets].concat()));
    assert!(out.contains("epoch 2/3 (1 of 2 steps) step 2:"), "{out}");
    // One process: epoch 1 has 2 steps and epoch 2 has 4, so the 4 pairs seen are 2 of its
    // steps: step 2 continues as step 2 + 2 = 4, and the run ends at 4 + 2 + 4 = 10.
    let out = ok_printed(
        promptir()
            .current_dir(dir)
            .args(["train", "--resume", "st", "--quiet", "--set", "train.max_steps=null"])
            .output()
            .unwrap(),
    );
    assert!(
        out.contains("an epoch has 4 steps instead of 2")
            && out.contains("step 2 continues as step 4"),
        "{out}"
    );
    assert!(out.contains("finished run st after 3 epochs / 10 steps"), "{out}");
    let m = promptir::train::read_metrics(&dir.join("logs/st/metrics.jsonl")).unwrap();
    let epochs: Vec<(usize, usize)> = m.iter().map(|l| (l.epoch, l.step)).collect();
    assert_eq!(epochs, [(1, 1), (2, 6), (3, 10)], "(epoch, step) of each metrics line");
}

#[test]
fn accumulation_and_the_moving_average_compose_with_two_ranks() {
    let d = setup();
    let dir = d.path();
    let ema = ["--set", "train.ema.decay=0.5", "--set", "train.ema.start_step=1"];
    ok_printed(
        promptir()
            .current_dir(dir)
            .args(["train", "--config", "exp.yaml", "--name", "one", "--quiet"])
            .args(["--set", "train.batch_size=4"])
            .args(ema)
            .output()
            .unwrap(),
    );
    // 2 ranks x 2 micro-batches of 1: the same 4 pairs per step as one batch of 4.
    let sets = ["--set", "train.batch_size=1", "--set", "train.accumulate=2"];
    let out = ok_printed(torchrun(
        dir,
        &[&["--config", "exp.yaml", "--name", "two"][..], &sets, &ema].concat(),
    ));
    assert!(out.contains("finished run two after 2 epochs / 4 steps"), "{out}");
    let (a, b) = (
        weights(&dir.join("weights/one/last.safetensors")),
        weights(&dir.join("weights/two/last.safetensors")),
    );
    assert_eq!(a.len(), b.len());
    assert!(a.iter().any(|(k, _)| k.starts_with("ema.")), "the average is saved");
    let mut worst = 0.0f64;
    for ((ka, ta), (kb, tb)) in a.iter().zip(&b) {
        assert_eq!(ka, kb);
        worst = worst.max(f64::try_from((ta - tb).abs().max()).unwrap());
    }
    eprintln!("2 ranks x 2 x batch 1 vs 1 process x batch 4, with EMA: max |diff| = {worst:e}");
    assert!(worst < 1e-4, "{worst}");
}

/// Rank `rank` of 2 training run `name` for ever, launched by hand (rank 0 serves the
/// rendezvous store), as a Slurm job script would.
fn spawn_rank(dir: &Path, port: u16, rank: &str, name: &str) -> Child {
    spawn_rank_with(dir, port, rank, name, &[])
}

fn spawn_rank_with(dir: &Path, port: u16, rank: &str, name: &str, sets: &[&str]) -> Child {
    let mut args = vec!["--config", "exp.yaml", "--name", name];
    args.extend(["--set", "train.epochs=1000", "--set", "train.val_every=1000"]);
    args.extend(sets.iter().flat_map(|s| ["--set", s]));
    spawn_rank_args(dir, port, rank, &args)
}

/// Rank `rank` of 2 running `promptir train --quiet ARGS`.
fn spawn_rank_args(dir: &Path, port: u16, rank: &str, args: &[&str]) -> Child {
    promptir()
        .current_dir(dir)
        .args(["train", "--quiet"])
        .args(args)
        .env("WORLD_SIZE", "2")
        .env("RANK", rank)
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        // A hang fails the test in a minute, not after the default 600 s.
        .env("PROMPTIR_DIST_TIMEOUT", "60")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until both ranks train: the first epoch's checkpoint exists.
fn wait_for_first_epoch(dir: &Path, name: &str, r0: &mut Child) {
    let last = dir.join(format!("weights/{name}/last.safetensors"));
    let t0 = Instant::now();
    while !last.exists() {
        assert!(t0.elapsed() < Duration::from_secs(60), "no checkpoint within 60 s");
        assert!(r0.try_wait().unwrap().is_none(), "rank 0 exited early");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn fp16_with_loss_scaling_gives_the_same_steps_on_two_ranks_as_on_one() {
    let d = setup();
    let dir = d.path();
    let fp16 = ["--set", "train.precision=fp16", "--set", "train.max_steps=2"];
    ok_printed(
        promptir()
            .current_dir(dir)
            .args(["train", "--config", "exp.yaml", "--name", "one", "--quiet"])
            .args(["--set", "train.batch_size=4"])
            .args(fp16)
            .output()
            .unwrap(),
    );
    let mut args = vec!["--config", "exp.yaml", "--name", "two"];
    args.extend(fp16);
    let out = ok_printed(torchrun(dir, &args));
    assert!(out.contains("finished run two after 1 epochs / 2 steps"), "{out}");
    let (a, b) = (
        weights(&dir.join("weights/one/last.safetensors")),
        weights(&dir.join("weights/two/last.safetensors")),
    );
    let (mut worst, mut sum, mut n, mut big) = (0.0f64, 0.0, 0usize, 0i64);
    for ((_, x), (_, y)) in a.iter().zip(&b) {
        let d = (x - y).abs();
        worst = worst.max(f64::try_from(d.max()).unwrap());
        sum += f64::try_from(d.sum(tch::Kind::Double)).unwrap();
        n += d.numel();
        big += i64::try_from(d.gt(1e-4).sum(tch::Kind::Int64)).unwrap();
    }
    let mean = sum / n as f64;
    // The gradients are averaged before the scaler's unscale and overflow check, so every rank
    // takes (or skips) the same step; what differs is fp16 rounding of two half batches, which
    // Adam's normalised step carries into the few weights whose gradient is near zero. Measured:
    // mean 3.4e-6, 273 of 338,476 weights above 1e-4, max 8.9e-4 (lr 1e-3). A step taken on
    // one side and skipped on the other would move every weight by about lr.
    eprintln!(
        "fp16, 2 ranks x batch 2 vs 1 process x batch 4, 2 steps: |diff| mean {mean:e}, max {worst:e}, {big} of {n} above 1e-4"
    );
    assert!(mean < 2e-5, "{mean}");
    assert!((big as f64) < 0.005 * n as f64, "{big} of {n}");
    assert!(worst < 4e-3, "more than two Adam steps apart: {worst}");
    let scale = |run: &str| {
        let f = TensorFile::open(&dir.join(format!("weights/{run}/last.safetensors"))).unwrap();
        let meta = promptir::io::CheckpointMeta::read(&f).unwrap();
        meta.resume.unwrap().state.scaler.map(|s| s.scale)
    };
    assert_eq!(scale("one"), scale("two"));
    assert!(scale("two").is_some());
}

#[test]
fn a_rank_that_dies_stops_the_others_within_seconds_naming_it() {
    let d = setup();
    let dir = d.path();
    let port = free_port();
    let (mut r0, mut r1) = (spawn_rank(dir, port, "0", "k"), spawn_rank(dir, port, "1", "k"));
    wait_for_first_epoch(dir, "k", &mut r0);
    r1.kill().unwrap();
    r1.wait().unwrap();
    let killed = Instant::now();
    let out = r0.wait_with_output().unwrap();
    let took = killed.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    eprintln!("rank 0 exited {:?} after {took:?}: {err}", out.status.code());
    assert_eq!(out.status.code(), Some(4), "a lost peer's exit code: {err}");
    // Measured: within 3 s (the heartbeat); the bound leaves room for a loaded CI machine.
    assert!(took < Duration::from_secs(20), "{took:?}");
    assert!(err.contains("lost rank 1") && err.contains("resumed"), "{err}");
}

/// `f(rank, step, input)` on 2 ranks in threads of this process, each with `exp`'s training
/// step joined to a Gloo group (rank 0's weights); the results in rank order.
fn on_two_ranks<I: Send, T: Send>(
    exp: &Experiment,
    inputs: [I; 2],
    f: impl Fn(usize, &mut TrainStep, I) -> T + Sync,
) -> Vec<T> {
    let port = free_port();
    std::thread::scope(|s| {
        let handles: Vec<_> = inputs
            .into_iter()
            .enumerate()
            .map(|(rank, input)| {
                let f = &f;
                s.spawn(move || {
                    let launch = Launch::local(rank, 2, port);
                    let g =
                        ProcessGroup::join(&launch, Device::Cpu, Duration::from_secs(30)).unwrap();
                    let mut step = TrainStep::new(exp, Device::Cpu).unwrap();
                    step.join(Rc::new(Group::new(g, exp.train.bucket_mb))).unwrap();
                    f(rank, &mut step, input)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn a_loss_that_turns_nan_on_one_rank_stops_every_rank_at_that_step() {
    // Two ranks in threads, each with the tiny network's training step, joined over Gloo. At
    // the second step rank 1 alone gets a NaN batch: its loss is NaN while rank 0's is finite.
    // Without an agreement rank 0 would apply the NaN-averaged gradients and wait for a rank
    // that had stopped.
    let exp = Experiment::load(&repo().join("experiments/tiny.yaml"), &[]).unwrap();
    let outcomes = on_two_ranks(&exp, [(), ()], |rank, step, ()| {
        let (x, y) = promptir::model::with_global_rng(|| {
            tch::manual_seed(rank as i64);
            let y = Tensor::rand([1, 3, 24, 24], (Kind::Float, Device::Cpu));
            let noise = Tensor::rand([1, 3, 24, 24], (Kind::Float, Device::Cpu));
            ((&y + noise * 0.1).clamp(0.0, 1.0), y)
        });
        let first = step.step(&x, &y, 1e-3, true).unwrap();
        let before: Vec<Tensor> = step.opt.params().iter().map(Tensor::copy).collect();
        let x2 = if rank == 1 { x.full_like(f64::NAN) } else { x.shallow_clone() };
        let second = step.step(&x2, &y, 1e-3, true).unwrap();
        let moved = (step.opt.params().iter().zip(&before))
            .map(|(p, b)| crate::common::max_abs_diff(p, b))
            .fold(0.0, f64::max);
        let own_loss_finite = f64::try_from(&second.terms.total).unwrap().is_finite();
        (vec![first.nonfinite, second.nonfinite], own_loss_finite, moved)
    });
    let [(r0, r0_finite, r0_moved), (r1, r1_finite, r1_moved)] = &outcomes[..] else { panic!() };
    eprintln!("non-finite at steps 1, 2: rank 0 {r0:?}, rank 1 {r1:?}");
    assert!(*r0_finite && !*r1_finite, "the NaN is rank 1's alone");
    assert_eq!(r0, &[false, true], "rank 0 stops at step 2 because rank 1's loss is NaN");
    assert_eq!(r1, &[false, true]);
    assert_eq!((*r0_moved, *r1_moved), (0.0, 0.0), "no rank updated its weights at step 2");
}

#[test]
fn two_ranks_average_their_gradients_to_the_whole_batch_gradient() {
    // The weight tests below compare AdamW steps, which hardly change if every gradient is
    // scaled by one factor (a sum instead of a mean would pass them); this checks the average.
    let exp = Experiment { model: promptir::model::ModelConfig::tiny(), ..Default::default() };
    let x = promptir::model::with_global_rng(|| {
        tch::manual_seed(5);
        Tensor::rand([8, 3, 32, 32], (Kind::Float, Device::Cpu))
    });
    let y = x.flip([3]) * 0.8;
    // lr 0: the gradients stay in the variables and the weights do not move.
    let mut whole = TrainStep::new(&exp, Device::Cpu).unwrap();
    whole.step(&x, &y, 0.0, true).unwrap();
    let grads = |step: &TrainStep| -> Vec<(String, Tensor)> {
        step.vs.variables().into_iter().map(|(k, t)| (k, t.grad().copy())).collect()
    };
    let expected = grads(&whole);
    // Each rank gets its half of the batch and its own copy of the expected gradients.
    let inputs = [0, 1].map(|r: i64| {
        (
            x.narrow(0, 4 * r, 4),
            y.narrow(0, 4 * r, 4),
            expected.iter().map(|(k, t)| (k.clone(), t.copy())).collect::<Vec<_>>(),
        )
    });
    let worst = on_two_ranks(&exp, inputs, |_, step, (x, y, expected)| {
        step.step(&x, &y, 0.0, true).unwrap();
        let ours = step.vs.variables();
        assert_eq!(ours.len(), expected.len());
        (expected.iter())
            .map(|(k, ga)| crate::common::max_rel_diff(ga, &ours[k].grad()))
            .fold(0.0, f64::max)
    });
    eprintln!("2 ranks x batch 4 vs batch 8: gradients' max |diff| / max |grad| = {worst:?}");
    assert!(worst.iter().all(|w| *w <= 1e-5), "{worst:?}");
}

#[test]
fn ranks_started_with_other_settings_or_data_stop_at_once_naming_them() {
    let d = setup();
    let dir = d.path();
    // The same pairs elsewhere (another machine's mount point) are fine; one pair fewer is not.
    paired_dataset(&dir.join("same"));
    paired_dataset(&dir.join("fewer"));
    for sub in ["train/degraded/snow-6.png", "train/clean/snow_clean-6.png"] {
        std::fs::remove_file(dir.join("fewer").join(sub)).unwrap();
    }
    let both = |name: &str, r1: &[&str]| {
        let port = free_port();
        let r0 = spawn_rank_with(dir, port, "0", name, &["train.max_steps=1"]);
        let mut sets = vec!["train.max_steps=1"];
        sets.extend(r1);
        let r1 = spawn_rank_with(dir, port, "1", name, &sets);
        let t0 = Instant::now();
        let (o0, o1) = (r0.wait_with_output().unwrap(), r1.wait_with_output().unwrap());
        let err = |o: &Output| String::from_utf8_lossy(&o.stderr).into_owned();
        eprintln!(
            "{name}: {:?} after {:?}\n  rank 0: {}  rank 1: {}",
            (o0.status.code(), o1.status.code()),
            t0.elapsed(),
            err(&o0),
            err(&o1)
        );
        if o1.status.code() == Some(2) {
            // Measured: 0.8-1.5 s (two processes starting, one store round trip and a reduce).
            assert!(t0.elapsed() < Duration::from_secs(10), "refused after {:?}", t0.elapsed());
        }
        let (e0, e1) = (err(&o0), err(&o1));
        (o0, e0, o1, e1)
    };
    let (o0, e0, o1, e1) = both("lr", &["train.lr=0.005"]);
    assert_eq!((o0.status.code(), o1.status.code()), (Some(2), Some(2)));
    assert!(e1.contains("rank 1 of 2 was started with other settings than rank 0: train.lr: 0.005 (rank 0: 0.001)"), "{e1}");
    assert!(e0.contains("rank 1 started with other settings than rank 0"), "{e0}");
    assert_eq!(e1.lines().filter(|l| l.contains("error")).count(), 1, "one error line: {e1}");
    assert!(!e1.contains("panicked"), "{e1}");
    assert!(!dir.join("logs/lr").exists(), "nothing is written");
    let (o0, _, o1, e1) = both("fewer", &["data.root=fewer"]);
    assert_eq!((o0.status.code(), o1.status.code()), (Some(2), Some(2)));
    assert!(e1.contains("dataset: 11 pairs"), "{e1}");
    let (o0, e0, o1, e1) = both("same", &["data.root=same", "data.workers=2"]);
    assert!(o0.status.success() && o1.status.success(), "{e0}{e1}");

    // A resume where rank 1 reads its own, stale copy of the run (no shared filesystem).
    crate::common::copy_dir(&dir.join("weights/same"), &dir.join("stale/same"));
    let state = dir.join("stale/same/train_state.json");
    let text = std::fs::read_to_string(&state).unwrap().replace("\"step\": 1,", "\"step\": 7,");
    std::fs::write(&state, text).unwrap();
    let port = free_port();
    let r0 = spawn_rank_args(dir, port, "0", &["--resume", "same"]);
    let r1 = spawn_rank_args(dir, port, "1", &["--resume", "same", "--weights-dir", "stale"]);
    let (o0, o1) = (r0.wait_with_output().unwrap(), r1.wait_with_output().unwrap());
    let e1 = String::from_utf8_lossy(&o1.stderr);
    assert_eq!((o0.status.code(), o1.status.code()), (Some(2), Some(2)), "{e1}");
    assert!(e1.contains("its train_state.json at step 7) (rank 0: --resume same (its train_state.json at step 1))"), "{e1}");
}

#[test]
fn sigterm_to_one_rank_stops_both_after_the_same_step_and_saves() {
    let d = setup();
    let dir = d.path();
    let port = free_port();
    let (mut r0, r1) = (spawn_rank(dir, port, "0", "s"), spawn_rank(dir, port, "1", "s"));
    wait_for_first_epoch(dir, "s", &mut r0);
    // Only rank 1 is told (as when one node of a job is preempted); rank 0 learns it through
    // the store and both stop after the step rank 1 proposed.
    signal(r1.id(), "-TERM");
    let (o0, o1) = (r0.wait_with_output().unwrap(), r1.wait_with_output().unwrap());
    ok_printed(o1);
    let out = ok_printed(o0);
    let steps: usize = out
        .split(" steps;")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no step count: {out}"));
    assert!(out.contains("stopped run s after") && out.contains("resume with"), "{out}");
    let state: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("weights/s/train_state.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(state["step"], steps, "{state}");
    assert!(steps >= 2, "the first epoch (2 steps) was done before the signal: {steps}");
    let last = TensorFile::open(&dir.join("weights/s/last.safetensors")).unwrap();
    let meta = promptir::io::CheckpointMeta::read(&last).unwrap();
    assert_eq!(meta.resume.map(|r| r.state.step), Some(steps));
}

#[test]
fn launches_that_cannot_work_exit_2_with_one_line() {
    let d = setup();
    let run = |env: &[(&str, &str)]| {
        let mut c = promptir();
        c.current_dir(d.path()).args(["train", "--config", "exp.yaml", "--quiet"]);
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    };
    for (env, needle) in [
        (&[("WORLD_SIZE", "2"), ("RANK", "0")][..], "MASTER_ADDR is not set"),
        (
            &[("WORLD_SIZE", "2"), ("RANK", "2"), ("MASTER_ADDR", "127.0.0.1")][..],
            "RANK=2 with WORLD_SIZE=2",
        ),
    ] {
        let err = user_error(&run(env));
        assert!(err.contains(needle), "{env:?}: {err}");
    }
    assert!(!d.path().join("logs").exists(), "nothing written");
}
