//! Safe wrappers over `csrc/native.cpp`: the libtorch calls tch does not bind (autocast with a
//! dtype and a device type, the fused AdamW kernel, the AMP unscale kernel, the profiler). Each C
//! function catches every C++ exception and returns its message, which becomes an
//! `Error::Torch`-like [`Error::Native`].

use crate::{Error, Result};
use std::ffi::{c_char, c_int, CStr, CString};
use std::path::Path;
use tch::{Device, Kind, Tensor};

/// tch's tensor handle, which is an `at::Tensor*` in C++.
type CTensor = *mut torch_sys::C_tensor;

extern "C" {
    fn promptir_free_error(err: *mut c_char);
    fn promptir_autocast_enter(
        device_type: c_int,
        enabled: bool,
        dtype: c_int,
        prev_enabled: *mut bool,
        prev_dtype: *mut c_int,
    ) -> *mut c_char;
    fn promptir_autocast_exit(
        device_type: c_int,
        prev_enabled: bool,
        prev_dtype: c_int,
    ) -> *mut c_char;
    fn promptir_autocast_is_enabled(device_type: c_int, out: *mut bool) -> *mut c_char;
    fn promptir_fused_adamw(
        params: *const CTensor,
        grads: *const CTensor,
        exp_avgs: *const CTensor,
        exp_avg_sqs: *const CTensor,
        steps: *const CTensor,
        n: usize,
        lr: f64,
        beta1: f64,
        beta2: f64,
        weight_decay: f64,
        eps: f64,
        grad_scale: CTensor,
        found_inf: CTensor,
    ) -> *mut c_char;
    fn promptir_amp_unscale(
        grads: *const CTensor,
        n: usize,
        found_inf: CTensor,
        inv_scale: CTensor,
    ) -> *mut c_char;
    fn promptir_cuda_set_device(index: c_int) -> *mut c_char;
    fn promptir_profiler_start(cuda: bool) -> *mut c_char;
    fn promptir_profiler_stop(path: *const c_char) -> *mut c_char;
    fn promptir_foreach_lerp(
        targets: *const CTensor,
        ends: *const CTensor,
        n: usize,
        weight: f64,
    ) -> *mut c_char;
}

/// A string native.cpp malloc'ed (a returned error, or a value through an out-pointer), copied
/// and freed. `ptr` must be such a string, non-null, and not used again.
pub(crate) fn take_string(ptr: *mut c_char) -> String {
    // SAFETY: per the contract above: a NUL-terminated malloc'ed string, freed once here.
    let s = unsafe { CStr::from_ptr(ptr) }.to_string_lossy().into_owned();
    unsafe { promptir_free_error(ptr) };
    s
}

/// A native function's return: `None` for success, else its error message's first line
/// (libtorch appends a C++ stack trace to its messages; the first line says what happened).
pub(crate) fn take_error(err: *mut c_char) -> Option<String> {
    if err.is_null() {
        return None;
    }
    Some(take_string(err).lines().next().unwrap_or("").trim_end().to_string())
}

/// Turns a returned error message (owned by the C side) into an error.
fn check(err: *mut c_char) -> Result<()> {
    take_error(err).map_or(Ok(()), |msg| Err(Error::Native(msg)))
}

fn handles(ts: &[Tensor]) -> Vec<CTensor> {
    ts.iter().map(|t| t.as_ptr() as CTensor).collect()
}

fn handle(t: Option<&Tensor>) -> CTensor {
    t.map_or(std::ptr::null_mut(), |t| t.as_ptr() as CTensor)
}

/// `c10::DeviceType` of a device.
fn device_type(device: Device) -> c_int {
    match device {
        Device::Cpu => 0,
        Device::Cuda(_) => 1,
        Device::Mps => 13,
        Device::Vulkan => 10,
    }
}

/// `c10::ScalarType` of the two autocast dtypes.
fn scalar_type(kind: Kind) -> Result<c_int> {
    match kind {
        Kind::Half => Ok(5),
        Kind::BFloat16 => Ok(15),
        other => Err(Error::Internal(format!("autocast runs in Half or BFloat16, not {other:?}"))),
    }
}

/// While alive, ops on `device` run under autocast in `dtype` (as in `torch.autocast`); dropping
/// it restores what was set before. Autocast state is per thread.
#[must_use = "autocast ends when the guard is dropped"]
pub struct Autocast {
    device_type: c_int,
    prev_enabled: bool,
    prev_dtype: c_int,
}

impl Autocast {
    pub fn new(device: Device, dtype: Kind) -> Result<Self> {
        let (device_type, dtype) = (device_type(device), scalar_type(dtype)?);
        let (mut prev_enabled, mut prev_dtype) = (false, 0);
        // SAFETY: plain values in, two out-pointers to live locals.
        check(unsafe {
            promptir_autocast_enter(device_type, true, dtype, &mut prev_enabled, &mut prev_dtype)
        })?;
        Ok(Autocast { device_type, prev_enabled, prev_dtype })
    }
}

impl Drop for Autocast {
    fn drop(&mut self) {
        // SAFETY: plain values. Restoring state cannot meaningfully fail; nothing to report in drop.
        let _ = check(unsafe {
            promptir_autocast_exit(self.device_type, self.prev_enabled, self.prev_dtype)
        });
    }
}

/// Whether autocast is on for `device` in this thread.
pub fn autocast_enabled(device: Device) -> bool {
    let mut on = false;
    // SAFETY: one out-pointer to a live local.
    check(unsafe { promptir_autocast_is_enabled(device_type(device), &mut on) }).is_ok() && on
}

/// AdamW's hyper-parameters for one step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWStep {
    pub lr: f64,
    pub betas: [f64; 2],
    pub weight_decay: f64,
    pub eps: f64,
}

/// What a fused AdamW step updates, one entry per parameter (all on one device).
#[derive(Default)]
pub struct AdamWTensors {
    pub params: Vec<Tensor>,
    pub grads: Vec<Tensor>,
    pub exp_avgs: Vec<Tensor>,
    pub exp_avg_sqs: Vec<Tensor>,
    /// 0-d float32 step counts, counted up by the step.
    pub steps: Vec<Tensor>,
}

/// One fused AdamW step (libtorch's `_fused_adamw_`, CPU or CUDA). `grad_scale` divides the
/// gradients in the kernel; with `found_inf` nonzero nothing changes (an fp16 overflow) and the
/// step counts are taken back.
pub fn fused_adamw(
    t: &AdamWTensors,
    hp: AdamWStep,
    grad_scale: Option<&Tensor>,
    found_inf: Option<&Tensor>,
) -> Result<()> {
    let n = t.params.len();
    if [t.grads.len(), t.exp_avgs.len(), t.exp_avg_sqs.len(), t.steps.len()].iter().any(|&l| l != n)
    {
        return Err(Error::Native("fused_adamw: lists of different lengths".into()));
    }
    let (p, g, m) = (handles(&t.params), handles(&t.grads), handles(&t.exp_avgs));
    let (v, s) = (handles(&t.exp_avg_sqs), handles(&t.steps));
    // SAFETY: the handle arrays hold n live tensors each and outlive the call; the optional
    // tensors are live or null.
    check(unsafe {
        promptir_fused_adamw(
            p.as_ptr(),
            g.as_ptr(),
            m.as_ptr(),
            v.as_ptr(),
            s.as_ptr(),
            n,
            hp.lr,
            hp.betas[0],
            hp.betas[1],
            hp.weight_decay,
            hp.eps,
            handle(grad_scale),
            handle(found_inf),
        )
    })
}

/// `GradScaler.unscale_` on device: multiplies each gradient by `inv_scale` in place and sets
/// `found_inf` (a 0-d float tensor) to 1 if any value is inf/NaN. No host sync.
pub fn amp_unscale(grads: &[Tensor], found_inf: &Tensor, inv_scale: &Tensor) -> Result<()> {
    let g = handles(grads);
    // SAFETY: `g` holds live tensors and outlives the call; the two tensors are live.
    check(unsafe {
        promptir_amp_unscale(
            g.as_ptr(),
            g.len(),
            found_inf.as_ptr() as CTensor,
            inv_scale.as_ptr() as CTensor,
        )
    })
}

/// Makes `device`, when it is a CUDA device, the calling thread's current one
/// (`torch.cuda.set_device`): a rank's CUDA context and NCCL communicator then live on its own
/// GPU instead of GPU 0. Nothing to do for the CPU.
pub fn set_current_device(device: Device) -> Result<()> {
    match device {
        Device::Cuda(i) => cuda_set_device(i),
        _ => Ok(()),
    }
}

fn cuda_set_device(index: usize) -> Result<()> {
    // SAFETY: a plain value in, an error string (or null) out.
    check(unsafe { promptir_cuda_set_device(index as c_int) })
}

/// `targets[i] += weight * (ends[i] - targets[i])` in place for every `i` (libtorch's
/// `_foreach_lerp_`: one multi-tensor kernel), without autograd.
pub fn foreach_lerp(targets: &[Tensor], ends: &[Tensor], weight: f64) -> Result<()> {
    if targets.len() != ends.len() {
        return Err(Error::Native("foreach_lerp: lists of different lengths".into()));
    }
    let (t, e) = (handles(targets), handles(ends));
    // SAFETY: both handle arrays hold n live tensors and outlive the call.
    check(unsafe { promptir_foreach_lerp(t.as_ptr(), e.as_ptr(), t.len(), weight) })
}

/// libtorch's profiler (what `torch.profiler.profile` drives) recording ops with their input
/// shapes and strides from `start` to [`Profiler::save`]; dropped unsaved, the record is discarded.
/// Its state belongs to the thread that started it, hence not `Send`.
#[must_use = "the profiler stops when dropped"]
pub struct Profiler {
    running: bool,
    _this_thread: std::marker::PhantomData<*const ()>,
}

impl Profiler {
    /// Records CPU ops, and on a CUDA device the kernels too.
    pub fn start(device: Device) -> Result<Self> {
        // SAFETY: a plain value in.
        check(unsafe { promptir_profiler_start(device.is_cuda()) })?;
        Ok(Profiler { running: true, _this_thread: std::marker::PhantomData })
    }

    /// Stops and writes the record to `path` as a Chrome trace (JSON: chrome://tracing,
    /// Perfetto, `scripts/profile_table.py`), whole or not at all.
    pub fn save(mut self, path: &Path) -> Result<()> {
        use std::os::unix::ffi::OsStrExt;
        // libtorch writes the file itself: into a temp name beside `path`, renamed when whole.
        let tmp = crate::io::atomic::temp_beside(path)?;
        let _ = std::fs::remove_file(&tmp); // a stale one must not pass for this trace
        let c_tmp = CString::new(tmp.as_os_str().as_bytes());
        self.running = false;
        // SAFETY: a NUL-terminated path that outlives the call, or null (stop without writing).
        let stopped = check(unsafe {
            promptir_profiler_stop(c_tmp.as_ref().map_or(std::ptr::null(), |c| c.as_ptr()))
        });
        let c_tmp =
            c_tmp.map_err(|_| Error::Usage(format!("{}: a path with a NUL byte", path.display())));
        let result = stopped.and(c_tmp).and_then(|_| {
            // libtorch logs, not throws, when it cannot write: a missing file is that failure.
            if !tmp.is_file() {
                return Err(Error::Usage(format!(
                    "{}: the profiler could not write its trace there",
                    path.display()
                )));
            }
            std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
        });
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

impl Drop for Profiler {
    fn drop(&mut self) {
        if self.running {
            // SAFETY: a null path: stop without writing. Nothing to report from a drop.
            let _ = check(unsafe { promptir_profiler_stop(std::ptr::null()) });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn setting_a_cuda_device_without_one_is_an_error_not_a_crash() {
        set_current_device(Device::Cpu).unwrap();
        if tch::Cuda::device_count() == 0 {
            let e = cuda_set_device(0).unwrap_err().to_string();
            assert!(e.contains("no CUDA device is present"), "{e}");
        } else {
            cuda_set_device(0).unwrap();
            let n = tch::Cuda::device_count() as usize;
            assert!(cuda_set_device(n).is_err());
        }
    }

    #[test]
    fn foreach_lerp_is_lerp_per_tensor_and_reports_mismatches() {
        let a = [Tensor::from_slice(&[1.0f32, 2.0]), Tensor::from_slice(&[0.0f32; 3])];
        let b = [Tensor::from_slice(&[3.0f32, 6.0]), Tensor::from_slice(&[-4.0f32, 4.0, 8.0])];
        tch::no_grad(|| foreach_lerp(&a, &b, 0.25)).unwrap();
        assert_eq!(Vec::<f32>::try_from(&a[0]).unwrap(), [1.5, 3.0]);
        assert_eq!(Vec::<f32>::try_from(&a[1]).unwrap(), [-1.0, 1.0, 2.0]);
        assert!(foreach_lerp(&a[..1], &b, 0.5).is_err());
        // A shape mismatch is libtorch's error, caught at the C boundary.
        let e = foreach_lerp(&a, &[b[1].shallow_clone(), b[0].shallow_clone()], 0.5).unwrap_err();
        assert!(!e.to_string().is_empty());
    }

    #[test]
    fn autocast_turns_on_for_its_scope_and_restores() {
        let a = Tensor::ones([4, 4], (Kind::Float, Device::Cpu));
        assert!(!autocast_enabled(Device::Cpu));
        for dtype in [Kind::BFloat16, Kind::Half] {
            let guard = Autocast::new(Device::Cpu, dtype).unwrap();
            assert!(autocast_enabled(Device::Cpu));
            assert_eq!(a.matmul(&a).kind(), dtype, "matmul runs in the autocast dtype");
            drop(guard);
            assert!(!autocast_enabled(Device::Cpu));
            assert_eq!(a.matmul(&a).kind(), Kind::Float);
        }
        assert!(Autocast::new(Device::Cpu, Kind::Float).is_err());
    }

    #[test]
    fn a_cpp_exception_comes_back_as_an_error() {
        // Lists of tensors on different devices... here: a found_inf of the wrong dtype.
        let g = [Tensor::ones([3], (Kind::Float, Device::Cpu))];
        let found = Tensor::zeros([], (Kind::Int64, Device::Cpu));
        let inv = Tensor::ones([], (Kind::Float, Device::Cpu));
        let e = amp_unscale(&g, &found, &inv).unwrap_err().to_string();
        assert!(e.starts_with("libtorch (native layer):"), "{e}");
    }
}
