//! How many optimizer steps each epoch has. Three things decide it: the stage's batch size
//! (progressive patches change it), gradient accumulation (`train.accumulate` loader batches per
//! step) and the number of processes (each takes its slice of a global batch). The trainer, the
//! resume point and the step-unit schedule all count through this one type.

use crate::config::{Stage, TrainConfig};

#[derive(Debug, Clone, PartialEq)]
pub struct EpochPlan {
    /// Training pairs an epoch goes over.
    pairs: usize,
    world: usize,
    accumulate: usize,
    /// At least one; the last runs to the end.
    stages: Vec<Stage>,
}

impl EpochPlan {
    pub fn new(train: &TrainConfig, pairs: usize, world: usize) -> Self {
        EpochPlan {
            pairs,
            world: world.max(1),
            accumulate: train.accumulate.max(1),
            stages: train.stage_list(),
        }
    }

    /// The same plan for another number of processes (a resume point saved by another world).
    pub fn with_world(&self, world: usize) -> Self {
        EpochPlan { world: world.max(1), ..self.clone() }
    }

    /// The number of processes.
    pub fn world(&self) -> usize {
        self.world
    }

    pub fn stages(&self) -> &[Stage] {
        &self.stages
    }

    /// The stage that trains `epoch` (0-based).
    pub fn stage_index(&self, epoch: usize) -> usize {
        self.stages.iter().position(|s| epoch < s.until_epoch).unwrap_or(self.stages.len() - 1)
    }

    /// Loader batches (of the stage's batch size, per process) in `epoch`; the last incomplete
    /// global batch is dropped.
    pub fn batches(&self, epoch: usize) -> usize {
        self.pairs / (self.stages[self.stage_index(epoch)].batch_size * self.world)
    }

    /// Optimizer steps in `epoch`: whole groups of `accumulate` batches.
    pub fn steps(&self, epoch: usize) -> usize {
        self.batches(epoch) / self.accumulate
    }

    /// Optimizer steps taken before `epoch` starts.
    pub fn steps_before(&self, epoch: usize) -> usize {
        let mut total = 0;
        let mut from = 0;
        for (i, s) in self.stages.iter().enumerate() {
            let until = if i + 1 == self.stages.len() { epoch } else { s.until_epoch.min(epoch) };
            if until <= from {
                break;
            }
            total += (until - from) * self.steps(from);
            from = until;
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(until_epoch: usize, patch_size: usize, batch_size: usize) -> Stage {
        Stage { until_epoch, patch_size, batch_size }
    }

    #[test]
    fn one_stage_is_a_constant_epoch() {
        let t = TrainConfig { batch_size: 4, accumulate: 2, ..TrainConfig::default() };
        let p = EpochPlan::new(&t, 100, 1);
        assert_eq!((p.batches(0), p.steps(0), p.steps(7)), (25, 12, 12));
        assert_eq!(p.steps_before(5), 60);
        let two = p.with_world(2);
        assert_eq!((two.batches(3), two.steps(3), two.steps_before(3)), (12, 6, 18));
    }

    #[test]
    fn stages_change_the_steps_and_the_last_runs_on() {
        let t = TrainConfig {
            stages: vec![stage(2, 64, 8), stage(5, 96, 4), stage(6, 128, 2)],
            ..TrainConfig::default()
        };
        let p = EpochPlan::new(&t, 64, 1);
        let steps: Vec<usize> = (0..8).map(|e| p.steps(e)).collect();
        assert_eq!(steps, [8, 8, 16, 16, 16, 32, 32, 32]);
        let before: Vec<usize> = (0..9).map(|e| p.steps_before(e)).collect();
        let mut sum = vec![0];
        for s in &steps {
            sum.push(sum.last().unwrap() + s);
        }
        assert_eq!(before, sum);
        assert_eq!(
            (p.stage_index(1), p.stage_index(2), p.stage_index(5), p.stage_index(99)),
            (0, 1, 2, 2)
        );
    }
}
