//! Data-parallel training on torch.distributed: how the process was launched ([`Launch`], from
//! the variables torchrun or a Slurm job script sets), the process group (c10d's TCPStore and
//! Gloo on CPU or NCCL on CUDA, through the native layer), gradient averaging over a few large
//! flat buckets ([`GradBuckets`]), and the one interface the trainer talks to, [`Collective`],
//! with a single-process implementation so that training has no one-process special cases.

mod buckets;
mod collective;
mod group;
mod launch;

pub use buckets::GradBuckets;
pub use collective::{Collective, Group, Single};
pub use group::ProcessGroup;
pub use launch::{timeout, Launch};
