//! Range checks of an experiment that need no file system (paths are checked by the commands
//! that use them).

use super::Experiment;

impl Experiment {
    /// Range checks that need no file system (paths are checked by the commands that use them).
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.model.validate()?;
        let t = &self.train;
        let prob = |name: &str, p: f64| {
            if (0.0..=1.0).contains(&p) {
                Ok(())
            } else {
                Err(format!("{name} is a probability and must be in [0, 1], got {p}"))
            }
        };
        let non_neg = |name: &str, x: f64| {
            if x >= 0.0 && x.is_finite() {
                Ok(())
            } else {
                Err(format!("{name} must be >= 0, got {x}"))
            }
        };
        let n = &self.name;
        if n.is_empty() || n.contains(['/', '\\']) || n == "." || n == ".." {
            return Err(format!("name {n:?} must be a plain folder name (no `/`, not `..`)"));
        }
        if let Some(p) = &self.published {
            if !(p.psnr > 0.0 && p.psnr.is_finite()) {
                return Err(format!("published.psnr must be a PSNR in dB (> 0), got {}", p.psnr));
            }
            if p.label.trim().is_empty() {
                return Err("published.label must say where the number comes from".into());
            }
        }
        if !crate::device::is_valid_device_name(&self.device) {
            return Err(format!("device {:?}: use auto, cpu, cuda or cuda:N", self.device));
        }
        if !(t.lr > 0.0 && t.lr.is_finite()) {
            return Err(format!("train.lr must be > 0, got {}", t.lr));
        }
        if t.batch_size == 0 {
            return Err("train.batch_size must be >= 1".into());
        }
        if t.epochs == 0 {
            return Err("train.epochs must be >= 1".into());
        }
        if t.max_steps == Some(0) {
            return Err("train.max_steps must be >= 1 (or left out)".into());
        }
        if let Some(m) = t.max_epochs {
            if !(m > 0.0 && m.is_finite()) {
                return Err(format!("train.max_epochs must be > 0, got {m}"));
            }
        }
        let m = self.model.pad_multiple() as usize;
        if t.patch_size == 0 || !t.patch_size.is_multiple_of(m) {
            return Err(format!(
                "train.patch_size must be a positive multiple of {m}, got {}",
                t.patch_size
            ));
        }
        let mut until = 0;
        for (i, st) in t.stages.iter().enumerate() {
            if st.until_epoch <= until {
                return Err(format!(
                    "train.stages[{i}].until_epoch must be > {until} (stages in increasing order), got {}",
                    st.until_epoch
                ));
            }
            until = st.until_epoch;
            if st.batch_size == 0 || st.patch_size == 0 || !st.patch_size.is_multiple_of(m) {
                return Err(format!(
                    "train.stages[{i}]: batch_size must be >= 1 and patch_size a positive multiple of {m}, got {} and {}",
                    st.batch_size, st.patch_size
                ));
            }
        }
        if t.accumulate == 0 {
            return Err("train.accumulate must be >= 1 (1 = no accumulation)".into());
        }
        if !(0.0..1.0).contains(&t.ema.decay) {
            return Err(format!(
                "train.ema.decay must be in [0, 1) (0 = off), got {}",
                t.ema.decay
            ));
        }
        for (i, b) in t.betas.iter().enumerate() {
            if !(0.0..1.0).contains(b) {
                return Err(format!("train.betas[{i}] must be in [0, 1), got {b}"));
            }
        }
        if t.eps.is_nan() || t.eps <= 0.0 {
            return Err(format!("train.eps must be > 0, got {}", t.eps));
        }
        non_neg("train.weight_decay", t.weight_decay)?;
        non_neg("train.bucket_mb", t.bucket_mb)?;
        non_neg("train.warmup_epochs", t.warmup_epochs)?;
        non_neg("train.warmup_start_lr", t.warmup_start_lr)?;
        non_neg("train.eta_min", t.eta_min)?;
        if self.schedule_horizon() < t.warmup_epochs {
            return Err(format!(
                "train.max_epochs ({}) must be >= train.warmup_epochs ({})",
                self.schedule_horizon(),
                t.warmup_epochs
            ));
        }
        if let Some(c) = t.grad_clip {
            if c.is_nan() || c <= 0.0 {
                return Err(format!("train.grad_clip must be > 0, got {c}"));
            }
        }
        if t.val_every == 0 || t.log_every == 0 {
            return Err("train.val_every and train.log_every must be >= 1".into());
        }
        if !(0.0..1.0).contains(&self.data.val_fraction) {
            return Err(format!(
                "data.val_fraction must be in [0, 1), got {}",
                self.data.val_fraction
            ));
        }
        // Upper bounds catch typos before they become thousands of threads or a huge queue.
        if !(1..=256).contains(&self.data.workers) || !(1..=1024).contains(&self.data.prefetch) {
            return Err(format!(
                "data.workers must be in 1..=256 and data.prefetch in 1..=1024, got {} and {}",
                self.data.workers, self.data.prefetch
            ));
        }
        let l = &self.loss;
        for (t, w) in l.terms() {
            non_neg(&format!("loss.{}", t.key), w)?;
        }
        let images = |t: &crate::train::Term| matches!(t.source, crate::train::Source::Images(_));
        if l.terms().all(|(t, w)| w <= 0.0 || !images(t)) {
            let keys: Vec<&str> =
                l.terms().filter(|(t, _)| images(t)).map(|(t, _)| t.key).collect();
            return Err(format!("at least one of loss.{} must be > 0", keys.join(", ")));
        }
        if l.weight("balance") > 0.0 && self.model.arch() != crate::model::Arch::MoceIr {
            return Err(format!(
                "loss.balance weighs MoCE-IR's routing balance loss, which model.arch {} does not have: set it to 0",
                self.model.arch().name()
            ));
        }
        let vgg_layers = super::VGG16_FEATURES;
        if l.weight("perceptual") > 0.0
            && (l.perceptual_layers.is_empty()
                || l.perceptual_layers.iter().any(|&i| i >= vgg_layers))
        {
            return Err(format!(
                "loss.perceptual_layers must list VGG16 `features.N` indices in 0..{vgg_layers}"
            ));
        }
        let a = &self.augment;
        prob("augment.hflip", a.hflip)?;
        prob("augment.vflip", a.vflip)?;
        prob("augment.rot90", a.rot90)?;
        prob("augment.rotate.prob", a.rotate.prob)?;
        prob("augment.color_jitter.prob", a.color_jitter.prob)?;
        prob("augment.blur.prob", a.blur.prob)?;
        prob("augment.erase.prob", a.erase.prob)?;
        non_neg("augment.rotate.degrees", a.rotate.degrees)?;
        let cj = &a.color_jitter;
        for (n, x) in [
            ("brightness", cj.brightness),
            ("contrast", cj.contrast),
            ("saturation", cj.saturation),
        ] {
            if !(0.0..1.0).contains(&x) {
                return Err(format!("augment.color_jitter.{n} must be in [0, 1), got {x}"));
            }
        }
        if !(a.blur.sigma[0] > 0.0 && a.blur.sigma[0] <= a.blur.sigma[1]) {
            return Err("augment.blur.sigma must be [min, max] with 0 < min <= max".into());
        }
        if !(a.erase.scale[0] > 0.0
            && a.erase.scale[0] <= a.erase.scale[1]
            && a.erase.scale[1] < 1.0)
        {
            return Err("augment.erase.scale must be [min, max] with 0 < min <= max < 1".into());
        }
        Ok(())
    }
}
