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
