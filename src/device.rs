//! Device selection and the `doctor` report.

use crate::{Error, Result};
use tch::Device;

/// Parses `auto | cpu | cuda | cuda:N`. `auto` is CUDA when present; asking for CUDA on a
/// machine without it is an error rather than a silent fallback.
pub fn parse_device(s: &str) -> Result<Device> {
    let s = s.trim().to_ascii_lowercase();
    let cuda = |i: usize| {
        let n = tch::Cuda::device_count() as usize;
        if i < n {
            Ok(Device::Cuda(i))
        } else if n == 0 {
            Err(Error::Usage(format!(
                "device {s:?}: CUDA is not available here (run `promptir doctor`); use --device cpu or auto"
            )))
        } else {
            Err(Error::Usage(format!(
                "device {s:?}: only {n} CUDA device(s) present; use cuda:0..cuda:{}",
                n - 1
            )))
        }
    };
    match s.as_str() {
        "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        "cuda" | "gpu" => cuda(0),
        _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => cuda(i),
            _ => Err(Error::Usage(format!("unknown device {s:?}: use auto, cpu, cuda or cuda:N"))),
        },
    }
}

/// Readies `device` for a run of fixed input shapes (`train`, `bench`): on CUDA it becomes this
/// thread's current device (the process's context and NCCL's on that GPU, not on GPU 0), and
/// cuDNN's benchmark mode picks each convolution's fastest algorithm once per shape.
pub fn prepare_fixed_shapes(device: Device) -> Result<()> {
    crate::native::set_current_device(device)?;
    if device.is_cuda() {
        tch::Cuda::cudnn_set_benchmark(true);
    }
    Ok(())
}

/// Checks a device string without touching CUDA (for config validation).
pub fn is_valid_device_name(s: &str) -> bool {
    let s = s.trim().to_ascii_lowercase();
    matches!(s.as_str(), "auto" | "cpu" | "cuda" | "gpu")
        || s.strip_prefix("cuda:").is_some_and(|i| i.parse::<usize>().is_ok())
}

/// What `promptir doctor` prints: the first thing to run on a new machine.
pub fn doctor_report() -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: String| out.push_str(&format!("{k:<18}{v}\n"));
    line("promptir", env!("CARGO_PKG_VERSION").to_string());
    line("libtorch", libtorch_version());
    let n = tch::Cuda::device_count();
    line("cuda available", format!("{} ({} device(s))", tch::Cuda::is_available(), n));
    line("cudnn available", tch::Cuda::cudnn_is_available().to_string());
    for i in 0..n {
        line(&format!("cuda:{i}"), cuda_device_name(i));
    }
    line("cpu threads", format!("{} (libtorch intra-op)", tch::get_num_threads()));
    line("default device", format!("{:?}", Device::cuda_if_available()));
    out
}

fn libtorch_version() -> String {
    // libtorch exposes no version call through tch; the build is pinned to 2.11.0 (torch-sys
    // 0.24 checks it), and the library path says which copy was loaded.
    let lib = std::fs::read_to_string("/proc/self/maps")
        .ok()
        .and_then(|maps| {
            maps.lines()
                .find(|l| l.ends_with("/libtorch_cpu.so"))
                .map(|l| l.split_whitespace().last().unwrap_or("").to_string())
        })
        .unwrap_or_else(|| "?".into());
    format!("2.11.0 (tch 0.24.0) from {lib}")
}

fn cuda_device_name(i: i64) -> String {
    // tch has no device-name binding; torch's python would, but the binary must not need python.
    // The driver's /proc entry names the GPU where it exists.
    let dir = std::path::Path::new("/proc/driver/nvidia/gpus");
    let name = std::fs::read_dir(dir).ok().and_then(|rd| {
        let mut entries: Vec<_> = rd.filter_map(|e| e.ok()).map(|e| e.path()).collect();
        entries.sort();
        let info = std::fs::read_to_string(entries.get(i as usize)?.join("information")).ok()?;
        info.lines().find_map(|l| l.strip_prefix("Model:").map(|m| m.trim().to_string()))
    });
    name.unwrap_or_else(|| "CUDA device".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        assert_eq!(parse_device("CPU").unwrap(), Device::Cpu);
        assert!(parse_device("tpu").unwrap_err().to_string().contains("unknown device"));
        assert!(is_valid_device_name("cuda:1") && !is_valid_device_name("cuda:x"));
        if !tch::Cuda::is_available() {
            assert!(parse_device("cuda").unwrap_err().to_string().contains("not available"));
            assert_eq!(parse_device("auto").unwrap(), Device::Cpu);
        }
    }
}
