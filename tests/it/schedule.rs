//! The LR schedule against a Python transcription of Lightning-bolts' closed form
//! (`scripts/reference/schedule_ref.py`) for random parameters.

use promptir::config::ScheduleUnit;
use promptir::train::Schedule;

#[test]
fn matches_lightning_closed_form_for_random_parameters() {
    let out = crate::common::run_python(&["scripts/reference/schedule_ref.py", "24"]);
    let (mut n, mut worst) = (0, 0.0f64);
    for line in out.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let f = |k: &str| v[k].as_f64().unwrap();
        let s = Schedule {
            lr: f("lr"),
            warmup_start_lr: f("warmup_start_lr"),
            eta_min: f("eta_min"),
            warmup_epochs: f("warmup_epochs"),
            max_epochs: f("max_epochs"),
            unit: ScheduleUnit::Epoch,
            steps_per_epoch: 1,
        };
        let e = f("epoch");
        let got = if e.fract() == 0.0 { s.lr_at(e as usize, 0) } else { s.lr_at_epoch(e) };
        let rel = (got - f("value")).abs() / s.lr;
        assert!(rel <= 1e-12, "{line}: got {got}");
        worst = worst.max(rel);
        n += 1;
    }
    assert!(n > 1000, "only {n} reference values");
    eprintln!("{n} values, max |diff| / lr = {worst:e}");
}

/// Both epoch steppings against the bolts class driven by torch's scheduler machinery: `epoch`
/// as `scheduler.step(e)` before epoch e, `epoch_lagged` as upstream's Lightning hook.
#[test]
fn epoch_steppings_match_the_scheduler_stepped_like_upstream() {
    let out = crate::common::run_python(&["scripts/reference/lightning_stepping_ref.py", "24"]);
    let (mut n, mut lagged_differs) = (0, 0);
    for line in out.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        let f = |k: &str| v[k].as_f64().unwrap();
        let s = |unit| Schedule {
            lr: f("lr"),
            warmup_start_lr: f("warmup_start_lr"),
            eta_min: f("eta_min"),
            warmup_epochs: f("warmup_epochs"),
            max_epochs: f("max_epochs"),
            unit,
            steps_per_epoch: 7,
        };
        let e = v["epoch"].as_u64().unwrap() as usize;
        let lr = f("lr");
        for (unit, key) in
            [(ScheduleUnit::Epoch, "closed"), (ScheduleUnit::EpochLagged, "upstream")]
        {
            let got = s(unit).lr_at(e, 3);
            assert!((got - f(key)).abs() / lr <= 1e-12, "{key}: {line}: got {got}");
        }
        lagged_differs += usize::from(f("closed") != f("upstream"));
        n += 1;
    }
    assert!(n > 1000 && lagged_differs > n / 2, "{n} values, {lagged_differs} differ");
    // experiments/upstream.yaml's schedule: epochs 0 and 1 at 0, the peak at epochs 15 and 16.
    let exp = promptir::config::Experiment::load(
        &crate::common::repo().join("experiments/upstream.yaml"),
        &[],
    )
    .unwrap();
    let schedule = Schedule::from_config(&exp, 1, 1);
    assert_eq!(schedule.unit, ScheduleUnit::EpochLagged);
    let up = |e| schedule.lr_at(e, 0);
    assert_eq!((up(0), up(1), up(15), up(16)), (0.0, 0.0, 2e-4, 2e-4));
    assert!((up(2) - 2e-4 / 14.0).abs() < 1e-18 && up(17) < 2e-4);
}
