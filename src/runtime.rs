//! Process-wide settings for speed, applied once at start-up by the binary.

/// Keeps large CPU tensors on the malloc heap instead of fresh `mmap` regions.
///
/// glibc serves every block above its mmap threshold (at most 32 MiB) with `mmap` and gives it
/// back with `munmap` on free. Full-resolution activations are larger than that (at 256x256 the
/// feed-forward's 254-channel map is 64 MiB), so each one was page-faulted and zeroed by the
/// kernel again at every use: about a million page faults per 256x256 forward, more than half of
/// its time (docs/perf-notes.md). On the heap, freed blocks are reused without faults.
///
/// The cost is that freed memory stays in the process: peak RSS is unchanged, but RSS no longer
/// shrinks after a large forward. `PROMPTIR_MALLOC=default` keeps glibc's behaviour.
/// Returns whether the setting was applied (glibc on Linux only).
pub fn tune_allocator() -> bool {
    if std::env::var("PROMPTIR_MALLOC").is_ok_and(|v| v == "default") {
        return false;
    }
    apply()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply() -> bool {
    // <malloc.h>: M_TRIM_THRESHOLD -1, M_MMAP_MAX -4.
    const M_TRIM_THRESHOLD: i32 = -1;
    const M_MMAP_MAX: i32 = -4;
    extern "C" {
        fn mallopt(param: i32, value: i32) -> i32;
    }
    // SAFETY: mallopt only changes allocator parameters; it returns 1 on success.
    unsafe { mallopt(M_MMAP_MAX, 0) == 1 && mallopt(M_TRIM_THRESHOLD, i32::MAX) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply() -> bool {
    false
}
