//! What training needs from the other processes, as one interface: [`Single`] for one process
//! (every collective the identity), [`Group`] over a [`ProcessGroup`] for several.

use super::buckets::GradBuckets;
use super::group::ProcessGroup;
use crate::Result;
use std::cell::OnceCell;
use std::collections::BTreeMap;
use tch::Tensor;

/// The collectives of data-parallel training. Every rank calls the same methods in the same
/// order (they are collectives); with one process each is the identity.
pub trait Collective {
    fn rank(&self) -> usize;
    fn world(&self) -> usize;
    /// Whether this process writes the run's files: rank 0.
    fn writes(&self) -> bool {
        self.rank() == 0
    }
    /// `values` summed over the ranks (loss sums, validation sums, flags).
    fn sum_f64(&self, values: &[f64]) -> Result<Vec<f64>>;
    /// Whether `flag` holds on any rank.
    fn any(&self, flag: bool) -> Result<bool> {
        Ok(self.sum_f64(&[f64::from(u8::from(flag))])?[0] > 0.0)
    }
    /// Rank 0's values of `params` copied to every rank (identical weights before the first
    /// step).
    fn broadcast_params(&self, params: &[Tensor]) -> Result<()>;
    /// Each gradient of `params` replaced by its mean over the ranks. `routed`: which
    /// parameters get a gradient depends on the batch (MoCE-IR's experts), so a parameter
    /// with a gradient on any rank takes part, with zeros where it has none.
    fn average_gradients(&self, params: &[Tensor], routed: bool) -> Result<()>;
    /// Rank 0's `value` on every rank.
    fn share_string(&self, key: &str, value: &str) -> Result<String>;
    /// Refuses ranks started with other settings than rank 0's (a usage error on every rank).
    fn check_same_settings(&self, settings: &BTreeMap<String, String>) -> Result<()>;
    /// The step count every rank stops at, once one of them was `asked` to stop with `done`
    /// steps taken; `None` while none was. One process stops at once.
    fn stop_at(&self, asked: bool, done: usize) -> Result<Option<usize>>;
}

/// One process: nothing to share.
#[derive(Debug, Default, Clone, Copy)]
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn world(&self) -> usize {
        1
    }
    fn sum_f64(&self, values: &[f64]) -> Result<Vec<f64>> {
        Ok(values.to_vec())
    }
    fn broadcast_params(&self, _: &[Tensor]) -> Result<()> {
        Ok(())
    }
    fn average_gradients(&self, _: &[Tensor], _: bool) -> Result<()> {
        Ok(())
    }
    fn share_string(&self, _: &str, value: &str) -> Result<String> {
        Ok(value.to_string())
    }
    fn check_same_settings(&self, _: &BTreeMap<String, String>) -> Result<()> {
        Ok(())
    }
    fn stop_at(&self, asked: bool, done: usize) -> Result<Option<usize>> {
        Ok(asked.then_some(done))
    }
}

/// Several processes in a [`ProcessGroup`]; gradients travel in buckets of about
/// `bucket_bytes`, laid out on first use from the parameters' sizes.
pub struct Group {
    group: ProcessGroup,
    bucket_bytes: usize,
    buckets: OnceCell<GradBuckets>,
}

impl Group {
    /// `bucket_mb` MiB per gradient bucket (`train.bucket_mb`; 0: one per parameter).
    pub fn new(group: ProcessGroup, bucket_mb: f64) -> Self {
        let bucket_bytes = (bucket_mb * (1 << 20) as f64) as usize;
        Group { group, bucket_bytes, buckets: OnceCell::new() }
    }

    fn buckets(&self, params: &[Tensor]) -> &GradBuckets {
        self.buckets.get_or_init(|| {
            let numels: Vec<usize> = params.iter().map(Tensor::numel).collect();
            GradBuckets::new(&numels, self.bucket_bytes)
        })
    }
}

impl Collective for Group {
    fn rank(&self) -> usize {
        self.group.rank
    }
    fn world(&self) -> usize {
        self.group.world
    }
    fn sum_f64(&self, values: &[f64]) -> Result<Vec<f64>> {
        self.group.sum_f64(values)
    }
    fn broadcast_params(&self, params: &[Tensor]) -> Result<()> {
        self.buckets(params).broadcast_values(&self.group, params)
    }
    fn average_gradients(&self, params: &[Tensor], routed: bool) -> Result<()> {
        if routed {
            super::buckets::agree_on_gradients(&self.group, params)?;
        }
        self.buckets(params).average(&self.group, params)
    }
    fn share_string(&self, key: &str, value: &str) -> Result<String> {
        self.group.share_string(key, value)
    }
    fn check_same_settings(&self, settings: &BTreeMap<String, String>) -> Result<()> {
        self.group.check_same_settings(settings)
    }
    fn stop_at(&self, asked: bool, done: usize) -> Result<Option<usize>> {
        // The proposer stops after one more step: no rank can have finished it yet (its
        // gradient all-reduce waits for the proposer), so every rank sees the proposal in time.
        if asked {
            self.group.propose_stop(done + 1).map(Some)
        } else {
            self.group.agreed_stop()
        }
    }
}
