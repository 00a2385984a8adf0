//! Gradient averaging over a few large flat buckets instead of one collective per parameter.

use super::group::ProcessGroup;
use crate::Result;
use tch::{Device, Tensor};

/// Averages gradients over the ranks with one all-reduce per bucket: consecutive parameters
/// packed into flat buffers of about `bucket_bytes` (PyTorch DDP's default is 25 MiB), instead
/// of one call per parameter.
pub struct GradBuckets {
    /// Parameter indices of each bucket.
    buckets: Vec<Vec<usize>>,
}

impl GradBuckets {
    /// Buckets over parameters of these sizes (numels of f32); `bucket_bytes` 0 puts every
    /// parameter in its own bucket (the per-parameter baseline).
    pub fn new(numels: &[usize], bucket_bytes: usize) -> Self {
        let mut buckets: Vec<Vec<usize>> = Vec::new();
        let mut bytes = 0;
        for (i, &n) in numels.iter().enumerate() {
            match buckets.last_mut() {
                Some(b) if bytes + 4 * n <= bucket_bytes => b.push(i),
                _ => {
                    buckets.push(vec![i]);
                    bytes = 0;
                }
            }
            bytes += 4 * n;
        }
        GradBuckets { buckets }
    }

    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }

    /// Copies rank 0's values of `params` to every rank (identical weights before the first
    /// step), one broadcast per bucket.
    pub fn broadcast_values(&self, group: &ProcessGroup, params: &[Tensor]) -> Result<()> {
        let _g = tch::no_grad_guard();
        for bucket in &self.buckets {
            let values: Vec<Tensor> = bucket.iter().map(|&i| params[i].shallow_clone()).collect();
            let flat = flatten(&values, group.device);
            group.broadcast(&flat, 0)?;
            copy_back(&flat, values);
        }
        Ok(())
    }

    /// Replaces each of `params`' gradients by its mean over the ranks. A parameter without a
    /// gradient is left out, as the optimizer leaves it: which parameters get none must be the
    /// same on every rank, so that every rank sends the same buffers. The network fixes it
    /// (AdaIR's modules that never run, or that reach the loss only through an integer), or,
    /// where routing decides it, `agree_on_gradients` makes it so first.
    pub fn average(&self, group: &ProcessGroup, params: &[Tensor]) -> Result<()> {
        let _g = tch::no_grad_guard();
        let scale = 1.0 / group.world as f64;
        for bucket in &self.buckets {
            let grads: Vec<Tensor> =
                bucket.iter().map(|&i| params[i].grad()).filter(Tensor::defined).collect();
            if grads.is_empty() {
                continue;
            }
            let flat = flatten(&grads, group.device);
            group.all_reduce_sum(&flat)?;
            copy_back(&(flat * scale), grads);
        }
        Ok(())
    }
}

/// Gives a zero gradient to each parameter of `params` that has none here but has one on
/// another rank (a MoCE-IR expert that only another rank's images were routed to), so that every
/// rank then holds gradients for the same parameters: those with a gradient anywhere. For a
/// loss that is a mean over images, the mean is then what one process with the whole batch
/// computes, where an expert's gradient comes from the images routed to it (MoCE-IR's balance
/// loss is each rank's own). One all-reduce of a flag per parameter, read on the host.
pub fn agree_on_gradients(group: &ProcessGroup, params: &[Tensor]) -> Result<()> {
    let here: Vec<f32> = params.iter().map(|p| f32::from(u8::from(p.grad().defined()))).collect();
    let flags = Tensor::from_slice(&here).to_device(group.device);
    group.all_reduce_sum(&flags)?;
    let anywhere: Vec<f32> = Vec::try_from(flags.to_device(Device::Cpu)).expect("float flags");
    let missing: Vec<Tensor> = (params.iter().zip(&anywhere))
        .filter(|(p, &n)| n > 0.0 && !p.grad().defined())
        .map(|(p, _)| tch::with_grad(|| p.sum(tch::Kind::Float) * 0.0))
        .collect();
    // tch cannot set a gradient directly: backward through zero times each sum defines it as
    // zeros, on the parameter's own device.
    if !missing.is_empty() {
        tch::with_grad(|| Tensor::stack(&missing, 0).sum(tch::Kind::Float).backward());
    }
    Ok(())
}

/// `tensors` end to end in one flat buffer on `device` (the bucket a collective sends).
fn flatten(tensors: &[Tensor], device: Device) -> Tensor {
    Tensor::cat(&tensors.iter().map(|t| t.reshape([-1])).collect::<Vec<_>>(), 0).to_device(device)
}

/// Copies consecutive slices of `flat` back into `tensors` (in place, on their own device).
fn copy_back(flat: &Tensor, tensors: Vec<Tensor>) {
    let Some(first) = tensors.first() else { return };
    let flat = flat.to_device(first.device()); // one transfer, not one per tensor
    let mut at = 0;
    for mut t in tensors {
        let n = t.numel() as i64;
        t.copy_(&flat.narrow(0, at, n).view_as(&t));
        at += n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_pack_consecutive_parameters() {
        let b = GradBuckets::new(&[10, 10, 1_000_000, 5, 5], 1000);
        assert_eq!(b.buckets, [vec![0, 1], vec![2], vec![3, 4]]);
        assert_eq!(GradBuckets::new(&[100, 100, 100], 800).buckets, [vec![0, 1], vec![2]]);
        let per_param = GradBuckets::new(&[10, 10, 5], 0);
        assert_eq!(per_param.len(), 3);
        assert_eq!(GradBuckets::new(&[10, 10, 5], 25 << 20).len(), 1);
    }
}
