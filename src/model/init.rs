//! Initial weights: PyTorch's default init, and one lock on libtorch's global generator so that
//! "same seed, same weights" holds while other threads draw from it.

use std::sync::{Mutex, MutexGuard};
use tch::nn;

/// libtorch has one global generator per device. Without this lock a seeded init in one thread
/// interleaves its draws with another thread's (or is reseeded halfway), so "same seed, same
/// weights" silently fails under `cargo test`'s parallel tests. Every draw the library makes from
/// that generator holds it (model init here, benchmark inputs).
static INIT_DRAWS: Mutex<()> = Mutex::new(());

pub(crate) fn init_lock() -> MutexGuard<'static, ()> {
    // A panic while holding it (an invalid config) leaves nothing half-done that matters here.
    INIT_DRAWS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs `f`, which draws from libtorch's global generator, while no seeded model init runs.
pub fn with_global_rng<T>(f: impl FnOnce() -> T) -> T {
    let _draws = init_lock();
    f()
}

/// Runs `build` under the generator lock, seeding the generator first when `seed` is given: the
/// same seed then gives the same initial weights even while other threads build models.
pub(crate) fn drawing<T>(seed: Option<u64>, build: impl FnOnce() -> T) -> T {
    let _draws = init_lock();
    if let Some(seed) = seed {
        tch::manual_seed(seed as i64);
    }
    build()
}

/// PyTorch's default init for conv and linear weights: kaiming_uniform(a=sqrt(5)), i.e. a
/// uniform bound of 1/sqrt(fan_in). tch's own default is sqrt(6) times wider.
pub const TORCH_DEFAULT_INIT: nn::Init = nn::Init::Kaiming {
    dist: nn::init::NormalOrUniform::Uniform,
    fan: nn::init::FanInOut::FanIn,
    non_linearity: nn::init::NonLinearity::ExplicitGain(0.577_350_269_189_625_8), // 1/sqrt(3)
};

/// A bias-free (unless `bias`) conv with PyTorch's default init, "same" padding, stride 1.
pub(crate) fn conv(
    p: nn::Path,
    cin: i64,
    cout: i64,
    k: i64,
    groups: i64,
    bias: bool,
) -> nn::Conv2D {
    conv_with(
        p,
        cin,
        cout,
        k,
        nn::ConvConfig { padding: k / 2, groups, bias, ..Default::default() },
    )
}

/// A conv with PyTorch's default init and `cfg`'s stride, padding, groups and bias.
pub(crate) fn conv_with(
    p: nn::Path,
    cin: i64,
    cout: i64,
    k: i64,
    cfg: nn::ConvConfig,
) -> nn::Conv2D {
    let groups = cfg.groups;
    let cfg = nn::ConvConfig {
        ws_init: TORCH_DEFAULT_INIT,
        // PyTorch's conv bias: U(+-1/sqrt(fan_in)), fan_in = cin/groups*k*k.
        bs_init: {
            let bound = 1.0 / (((cin / groups) * k * k) as f64).sqrt();
            nn::Init::Uniform { lo: -bound, up: bound }
        },
        ..cfg
    };
    nn::conv2d(p, cin, cout, k, cfg)
}
