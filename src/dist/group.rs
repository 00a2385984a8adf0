//! The process group through the native layer: c10d's TCPStore and Gloo on CPU or NCCL on
//! CUDA; collectives, the store, and naming the ranks that were lost when one fails.

use super::launch::Launch;
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
    s.parse()
        .map_err(|_| Error::Internal(format!("the store holds {s:?} as the step to stop after")))
}

fn store_key(key: &str) -> CString {
    CString::new(format!("promptir/{key}")).expect("keys have no NUL")
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
        Error::Lost(format!(
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

#[cfg(test)]
mod tests {
    use super::*;

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
