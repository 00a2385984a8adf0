//! Data-parallel training on torch.distributed: how the process was launched ([`Launch`], from
//! the variables torchrun or a Slurm job script sets), the process group (c10d's TCPStore and
//! Gloo on CPU or NCCL on CUDA, through the native layer), and gradient averaging over a few
//! large flat buckets ([`GradBuckets`]).

use crate::config::differences;
use crate::native::{take_error, take_string};
use crate::{Error, Result};
use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::time::Duration;
use tch::{Device, Tensor};

type CTensor = *mut torch_sys::C_tensor;

extern "C" {
    fn promptir_dist_init(
        host: *const c_char,
        port: c_int,
        is_server: bool,
        rank: c_int,
        world: c_int,
        nccl: bool,
        timeout_ms: i64,
        out: *mut *mut c_void,
    ) -> *mut c_char;
    fn promptir_dist_allreduce_sum(h: *mut c_void, t: CTensor) -> *mut c_char;
    fn promptir_dist_broadcast(h: *mut c_void, t: CTensor, root: c_int) -> *mut c_char;
    fn promptir_dist_lost_ranks(
        h: *mut c_void,
        wait_ms: i64,
        out: *mut c_int,
        n: *mut usize,
    ) -> *mut c_char;
    fn promptir_dist_store_set(
        h: *mut c_void,
        key: *const c_char,
        value: *const c_char,
    ) -> *mut c_char;
    fn promptir_dist_store_get(
        h: *mut c_void,
        key: *const c_char,
        value: *mut *mut c_char,
    ) -> *mut c_char;
    fn promptir_dist_store_first(
        h: *mut c_void,
        key: *const c_char,
        value: *const c_char,
        current: *mut *mut c_char,
    ) -> *mut c_char;
    fn promptir_dist_store_has(h: *mut c_void, key: *const c_char, out: *mut bool) -> *mut c_char;
    fn promptir_dist_free(h: *mut c_void);
}

fn parse_step(s: &str) -> Result<usize> {
    s.parse().map_err(|_| Error::Usage(format!("the store holds {s:?} as the step to stop after")))
}

fn store_key(key: &str) -> CString {
    CString::new(format!("promptir/{key}")).expect("keys have no NUL")
}

/// How this process was started: torchrun's environment (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
/// `MASTER_ADDR`, `MASTER_PORT`), which a Slurm job script sets the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub rank: usize,
    pub world: usize,
    /// The rank on this machine: the GPU it uses (`cuda:LOCAL_RANK`).
    pub local_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
    /// torchrun's agent serves the rendezvous store (`TORCHELASTIC_USE_AGENT_STORE=True`);
    /// otherwise rank 0 serves it.
    pub agent_store: bool,
}

impl Launch {
    /// Rank `rank` of `world` processes on this machine, rank 0 serving the store on `port`.
    pub fn local(rank: usize, world: usize, port: u16) -> Launch {
        Launch {
            rank,
            world,
            local_rank: rank,
            master_addr: "127.0.0.1".into(),
            master_port: port,
            agent_store: false,
        }
    }

    /// `None` when `WORLD_SIZE` is not set: one process, as without torchrun.
    pub fn from_env() -> Result<Option<Launch>> {
        Self::from_vars(|k| std::env::var(k).ok())
    }

    /// [`Launch::from_env`] over any variable lookup (tests).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Launch>> {
        let Some(world) = var("WORLD_SIZE") else {
            return match var("RANK") {
                Some(_) => Err(Error::Usage(
                    "RANK is set but WORLD_SIZE is not: launch with torchrun --nproc-per-node N, or set both (and MASTER_ADDR)".into(),
                )),
                None => Ok(None),
            };
        };
        let int = |name: &str, v: &str| {
            v.trim().parse::<usize>().map_err(|_| {
                Error::Usage(format!("{name}={v:?} is not a whole number (torchrun sets it)"))
            })
        };
        let world = int("WORLD_SIZE", &world)?;
        if world == 0 {
            return Err(Error::Usage("WORLD_SIZE=0: there must be at least one process".into()));
        }
        let rank = int("RANK", &var("RANK").unwrap_or_else(|| "0".into()))?;
        if rank >= world {
            return Err(Error::Usage(format!(
                "RANK={rank} with WORLD_SIZE={world}: ranks go from 0 to {}",
                world - 1
            )));
        }
        let master_addr = var("MASTER_ADDR").filter(|a| !a.trim().is_empty()).ok_or_else(|| {
            Error::Usage(format!(
                "WORLD_SIZE={world} but MASTER_ADDR is not set: launch with torchrun --nproc-per-node N (it sets both), or set MASTER_ADDR and MASTER_PORT"
            ))
        })?;
        let port = var("MASTER_PORT").unwrap_or_else(|| "29500".into());
        let master_port = port.trim().parse::<u16>().map_err(|_| {
            Error::Usage(format!("MASTER_PORT={port:?} is not a port number (1-65535)"))
        })?;
        let local_rank = match var("LOCAL_RANK") {
            Some(v) => int("LOCAL_RANK", &v)?,
            None => rank,
        };
        let agent_store = var("TORCHELASTIC_USE_AGENT_STORE").is_some_and(|v| v == "True");
        Ok(Some(Launch { rank, world, local_rank, master_addr, master_port, agent_store }))
    }
}

/// How long a collective or the rendezvous may wait for the other ranks before failing
/// (`PROMPTIR_DIST_TIMEOUT` seconds, default 600): long enough for a slow validation or save on
/// one rank; a rank that dies is noticed at once through its closed connections.
pub fn timeout() -> Duration {
    let secs = std::env::var("PROMPTIR_DIST_TIMEOUT").ok().and_then(|s| s.parse::<u64>().ok());
    Duration::from_secs(secs.unwrap_or(600).max(1))
}

/// This process's membership of the group: Gloo for CPU tensors, NCCL for CUDA ones.
pub struct ProcessGroup {
    handle: *mut c_void,
    pub rank: usize,
    pub world: usize,
    /// Where tensors must be for the collectives (CPU for Gloo).
    pub device: Device,
}

impl ProcessGroup {
    /// Joins the group `launch` describes, for tensors on `device`.
    pub fn join(launch: &Launch, device: Device, timeout: Duration) -> Result<Self> {
        let host = CString::new(launch.master_addr.as_str())
            .map_err(|_| Error::Usage("MASTER_ADDR holds a NUL byte".into()))?;
        let is_server = !launch.agent_store && launch.rank == 0;
        let mut handle = std::ptr::null_mut();
        // SAFETY: a valid C string, plain values, one out-pointer to a local.
        let err = unsafe {
            promptir_dist_init(
                host.as_ptr(),
                c_int::from(launch.master_port),
                is_server,
                launch.rank as c_int,
                launch.world as c_int,
                device.is_cuda(),
                timeout.as_millis() as i64,
                &mut handle,
            )
        };
        if let Some(msg) = take_error(err) {
            return Err(Error::Usage(format!(
                "rank {} of {} could not join the process group at {}:{} ({msg}); check MASTER_ADDR/MASTER_PORT and that every rank was started",
                launch.rank, launch.world, launch.master_addr, launch.master_port
            )));
        }
        Ok(ProcessGroup { handle, rank: launch.rank, world: launch.world, device })
    }

    /// A collective's failure, with the ranks that stopped answering.
    fn failed(&self, what: &str, msg: String) -> Error {
        let mut lost = vec![0 as c_int; self.world];
        let mut n = 0usize;
        // SAFETY: `lost` has room for every rank; `n` is a local.
        let err = unsafe { promptir_dist_lost_ranks(self.handle, 2500, lost.as_mut_ptr(), &mut n) };
        let who = match (take_error(err), &lost[..n]) {
            (None, [-1]) => {
                "the rendezvous store is gone, so rank 0 or the launcher died".to_string()
            }
            (None, []) | (Some(_), _) => {
                "no rank stopped its heartbeat: a rank hung, or the network failed".to_string()
            }
            (None, ranks) => {
                let list: Vec<String> = ranks.iter().map(|r| r.to_string()).collect();
                format!("lost rank {}", list.join(", "))
            }
        };
        Error::Usage(format!(
            "rank {} of {}: {what} failed: {who} ({msg}); the run can be resumed from its last checkpoint",
            self.rank, self.world
        ))
    }

    /// Sums `t` (on [`Self::device`]) over all ranks, in place.
    pub fn all_reduce_sum(&self, t: &Tensor) -> Result<()> {
        // SAFETY: a live tensor handle; the group handle lives as long as `self`.
        let err = unsafe { promptir_dist_allreduce_sum(self.handle, t.as_ptr() as CTensor) };
        match take_error(err) {
            None => Ok(()),
            Some(msg) => Err(self.failed("an all-reduce", msg)),
        }
    }

    /// Copies rank `root`'s `t` to every rank, in place.
    pub fn broadcast(&self, t: &Tensor, root: usize) -> Result<()> {
        // SAFETY: as for all_reduce_sum.
        let err =
            unsafe { promptir_dist_broadcast(self.handle, t.as_ptr() as CTensor, root as c_int) };
        match take_error(err) {
            None => Ok(()),
            Some(msg) => Err(self.failed("a broadcast", msg)),
        }
    }

    /// Rank 0's `value` on every rank (through the rendezvous store).
    pub fn share_string(&self, key: &str, value: &str) -> Result<String> {
        let key = store_key(key);
        if self.rank == 0 {
            let v = CString::new(value)
                .map_err(|_| Error::Usage(format!("{value:?} holds a NUL byte")))?;
            // SAFETY: two valid C strings.
            if let Some(msg) = take_error(unsafe {
                promptir_dist_store_set(self.handle, key.as_ptr(), v.as_ptr())
            }) {
                return Err(self.failed("the store", msg));
            }
            return Ok(value.to_string());
        }
        self.get(&key)
    }

    /// `key`'s value in the store, waiting (up to the timeout) for one.
    fn get(&self, key: &CStr) -> Result<String> {
        let mut out = std::ptr::null_mut();
        // SAFETY: a valid C string and one out-pointer, freed by take_string.
        if let Some(msg) =
            take_error(unsafe { promptir_dist_store_get(self.handle, key.as_ptr(), &mut out) })
        {
            return Err(self.failed("the store", msg));
        }
        Ok(take_string(out))
    }

    /// Proposes that every rank stop once `step` steps are done; the first proposal any rank
    /// made wins and is returned. A rank proposes before starting step `done + 1` with
    /// `step = done + 1`: no other rank can have finished that step yet (its gradient
    /// all-reduce waits for the proposer), so every rank sees the proposal in time.
    pub fn propose_stop(&self, step: usize) -> Result<usize> {
        let (key, value) = (store_key("stop_after"), CString::new(step.to_string()).unwrap());
        let mut out = std::ptr::null_mut();
        // SAFETY: two valid C strings and one out-pointer, freed by take_string.
        let err = unsafe {
            promptir_dist_store_first(self.handle, key.as_ptr(), value.as_ptr(), &mut out)
        };
        if let Some(msg) = take_error(err) {
            return Err(self.failed("the store", msg));
        }
        parse_step(&take_string(out))
    }

    /// The step every rank stops after, once any rank proposed one ([`Self::propose_stop`]):
    /// one round trip to the store, no GPU sync.
    pub fn agreed_stop(&self) -> Result<Option<usize>> {
        let key = store_key("stop_after");
        let mut has = false;
        // SAFETY: a valid C string and a local out-flag.
        if let Some(msg) =
            take_error(unsafe { promptir_dist_store_has(self.handle, key.as_ptr(), &mut has) })
        {
            return Err(self.failed("the store", msg));
        }
        if !has {
            return Ok(None);
        }
        parse_step(&self.get(&key)?).map(Some)
    }

    /// Sums `values` over all ranks (a small vector: loss sums, validation sums, flags).
    pub fn sum_f64(&self, values: &[f64]) -> Result<Vec<f64>> {
        let t = Tensor::from_slice(values).to_device(self.device);
        self.all_reduce_sum(&t)?;
        Ok(Vec::<f64>::try_from(t.to_device(Device::Cpu))?)
    }

    /// Checks that every rank holds rank 0's `settings` (`key -> value`). Ranks launched with
    /// another learning rate or dataset would train silently apart, and a different epoch
    /// count would leave the others waiting for the timeout; so on any difference every rank
    /// returns a usage error at once: those that differ name the keys, the others the ranks.
    pub fn check_same_settings(&self, settings: &BTreeMap<String, String>) -> Result<()> {
        let ours = serde_json::to_string(settings).expect("strings serialise");
        let theirs = self.share_string("settings", &ours)?;
        // A value that does not parse counts as a difference: this rank must still take part
        // in the reduce below, or the others would wait in it.
        let diff = match serde_json::from_str::<BTreeMap<String, String>>(&theirs) {
            Ok(theirs) => differences(settings, &theirs, "rank 0"),
            Err(e) => vec![format!("rank 0's settings in the store do not parse ({e})")],
        };
        let mut flags = vec![0.0; self.world];
        flags[self.rank] = f64::from(u8::from(!diff.is_empty()));
        let differ: Vec<String> = (self.sum_f64(&flags)?.iter().enumerate())
            .filter(|(_, &f)| f > 0.0)
            .map(|(r, _)| r.to_string())
            .collect();
        let fix = "start every rank with the same experiment file, --set overrides and dataset";
        match (diff.is_empty(), differ.is_empty()) {
            (_, true) => Ok(()),
            (false, _) => Err(Error::Usage(format!(
                "rank {} of {} was started with other settings than rank 0: {}; {fix}",
                self.rank,
                self.world,
                diff.join("; ")
            ))),
            (true, _) => Err(Error::Usage(format!(
                "rank {} of {}: rank {} started with other settings than rank 0 (named in its error); {fix}",
                self.rank,
                self.world,
                differ.join(", ")
            ))),
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: the handle came from promptir_dist_init and is freed once.
        unsafe { promptir_dist_free(self.handle) };
    }
}

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

    /// Replaces each of `params`' gradients by its mean over the ranks. Every parameter must
    /// have one (PromptIR uses all of its parameters in every forward).
    pub fn average(&self, group: &ProcessGroup, params: &[Tensor]) -> Result<()> {
        let _g = tch::no_grad_guard();
        let scale = 1.0 / group.world as f64;
        for bucket in &self.buckets {
            let grads: Vec<Tensor> = bucket.iter().map(|&i| params[i].grad()).collect();
            if grads.iter().any(|g| !g.defined()) {
                return Err(Error::Usage(
                    "a parameter got no gradient; data-parallel training needs every parameter in the forward".into(),
                ));
            }
            let flat = flatten(&grads, group.device);
            group.all_reduce_sum(&flat)?;
            copy_back(&(flat * scale), grads);
        }
        Ok(())
    }
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
    use std::collections::HashMap;

    fn launch(vars: &[(&str, &str)]) -> Result<Option<Launch>> {
        let m: HashMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Launch::from_vars(|k| m.get(k).cloned())
    }

    #[test]
    fn launches_read_torchrun_s_variables_and_refuse_bad_ones() {
        assert_eq!(launch(&[]).unwrap(), None);
        let l = launch(&[
            ("WORLD_SIZE", "4"),
            ("RANK", "3"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "node0"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (l.rank, l.world, l.local_rank, l.master_port, l.agent_store),
            (3, 4, 1, 29500, false)
        );
        let l = launch(&[
            ("WORLD_SIZE", "2"),
            ("RANK", "0"),
            ("MASTER_ADDR", "127.0.0.1"),
            ("MASTER_PORT", "12345"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!((l.master_port, l.agent_store, l.local_rank), (12345, true, 0));
        for (vars, needle) in [
            (&[("WORLD_SIZE", "2"), ("RANK", "0")][..], "MASTER_ADDR is not set"),
            (
                &[("WORLD_SIZE", "2"), ("RANK", "2"), ("MASTER_ADDR", "h")][..],
                "RANK=2 with WORLD_SIZE=2",
            ),
            (&[("RANK", "1")][..], "WORLD_SIZE is not"),
            (&[("WORLD_SIZE", "two")][..], "WORLD_SIZE=\"two\""),
            (
                &[("WORLD_SIZE", "2"), ("MASTER_ADDR", "h"), ("MASTER_PORT", "99999")][..],
                "MASTER_PORT",
            ),
        ] {
            let e = launch(vars).unwrap_err().to_string();
            assert!(e.contains(needle), "{vars:?}: {e}");
        }
    }

    #[test]
    fn buckets_pack_consecutive_parameters() {
        let b = GradBuckets::new(&[10, 10, 1_000_000, 5, 5], 1000);
        assert_eq!(b.buckets, [vec![0, 1], vec![2], vec![3, 4]]);
        assert_eq!(GradBuckets::new(&[100, 100, 100], 800).buckets, [vec![0, 1], vec![2]]);
        let per_param = GradBuckets::new(&[10, 10, 5], 0);
        assert_eq!(per_param.len(), 3);
        assert_eq!(GradBuckets::new(&[10, 10, 5], 25 << 20).len(), 1);
    }

    /// A free TCP port on this machine (bound and released; good enough for a test).
    fn free_port() -> u16 {
        std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    #[test]
    fn two_ranks_in_threads_reduce_broadcast_and_share_over_gloo() {
        let port = free_port();
        let results: Vec<(Vec<f64>, Vec<f32>, String)> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..2)
                .map(|rank| {
                    s.spawn(move || {
                        let l = Launch::local(rank, 2, port);
                        let g =
                            ProcessGroup::join(&l, Device::Cpu, Duration::from_secs(30)).unwrap();
                        let sums = g.sum_f64(&[rank as f64 + 1.0, 10.0]).unwrap();
                        let t = Tensor::from_slice(&[rank as f32 * 5.0, 7.0]);
                        g.broadcast(&t, 1).unwrap();
                        let name =
                            g.share_string("run", if rank == 0 { "run-a" } else { "" }).unwrap();
                        (sums, Vec::<f32>::try_from(&t).unwrap(), name)
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for (sums, bcast, name) in results {
            assert_eq!(sums, [3.0, 20.0]);
            assert_eq!(bcast, [5.0, 7.0], "rank 1's tensor");
            assert_eq!(name, "run-a");
        }
    }
}
