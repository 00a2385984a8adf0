// The native layer: the few libtorch calls tch 0.24 does not bind, behind a C API: autocast with
// a dtype, the fused AdamW, AMP unscale and multi-tensor lerp kernels, libtorch's profiler, and
// torch.distributed's c10d (a TCPStore rendezvous with a Gloo or NCCL process group).
//
// Tensors cross as tch's handles, which are `at::Tensor*`. Every function returns nullptr on
// success or an error message (allocated here, freed by promptir_free_error); no C++ exception
// ever unwinds into Rust. Only narrow headers are included, to keep this file's build short.
// PROMPTIR_NCCL (set by build.rs when the venv has CUDA's and NCCL's headers) adds NCCL.

#include <ATen/DeviceAccelerator.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/_amp_foreach_non_finite_check_and_unscale.h>
#include <ATen/ops/_foreach_add.h>
#include <ATen/ops/_foreach_lerp.h>
#include <ATen/ops/_foreach_sub.h>
#include <ATen/ops/_fused_adamw.h>
#include <torch/csrc/autograd/profiler_kineto.h>

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef PROMPTIR_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace {

char* copy_message(const char* msg) {
  size_t n = std::strlen(msg);
  char* out = static_cast<char*>(std::malloc(n + 1));
  if (out != nullptr) std::memcpy(out, msg, n + 1);
  return out;
}

// Runs `f`, turning any exception into an error message.
template <typename F>
char* guarded(F&& f) {
  try {
    f();
    return nullptr;
  } catch (const std::exception& e) {
    return copy_message(e.what());
  } catch (...) {
    return copy_message("unknown C++ exception");
  }
}

std::vector<at::Tensor> list(at::Tensor** ts, size_t n) {
  std::vector<at::Tensor> v;
  v.reserve(n);
  for (size_t i = 0; i < n; ++i) v.push_back(*ts[i]);
  return v;
}

std::optional<at::Tensor> maybe(at::Tensor* t) {
  return t == nullptr ? std::nullopt : std::optional<at::Tensor>(*t);
}

}  // namespace

extern "C" {

void promptir_free_error(char* err) { std::free(err); }

// Turns autocast on or off for a device type (c10::DeviceType, e.g. CPU 0, CUDA 1) with a
// dtype (c10::ScalarType, e.g. Half 5, BFloat16 15); reports the previous state so that it can
// be restored. Entering counts nesting, as torch.autocast does, and leaving the outermost
// region clears the cast cache.
char* promptir_autocast_enter(int device_type, bool enabled, int dtype, bool* prev_enabled,
                              int* prev_dtype) {
  return guarded([&] {
    auto dev = static_cast<c10::DeviceType>(device_type);
    *prev_enabled = at::autocast::is_autocast_enabled(dev);
    *prev_dtype = static_cast<int>(at::autocast::get_autocast_dtype(dev));
    at::autocast::set_autocast_dtype(dev, static_cast<c10::ScalarType>(dtype));
    at::autocast::set_autocast_enabled(dev, enabled);
    at::autocast::increment_nesting();
  });
}

char* promptir_autocast_exit(int device_type, bool prev_enabled, int prev_dtype) {
  return guarded([&] {
    auto dev = static_cast<c10::DeviceType>(device_type);
    if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
    at::autocast::set_autocast_enabled(dev, prev_enabled);
    at::autocast::set_autocast_dtype(dev, static_cast<c10::ScalarType>(prev_dtype));
  });
}

char* promptir_autocast_is_enabled(int device_type, bool* out) {
  return guarded([&] { *out = at::autocast::is_autocast_enabled(static_cast<c10::DeviceType>(device_type)); });
}

// Makes CUDA device `index` the calling thread's current device (torch.cuda.set_device), so that
// a rank's CUDA context and NCCL communicator live on its own GPU rather than on GPU 0. Fails
// where no CUDA device is present.
char* promptir_cuda_set_device(int index) {
  return guarded([&] {
    TORCH_CHECK(at::accelerator::getAccelerator(false) == c10::DeviceType::CUDA &&
                    at::accelerator::deviceCount() > 0,
                "no CUDA device is present");
    at::accelerator::setDeviceIndex(static_cast<c10::DeviceIndex>(index));
  });
}

// Starts libtorch's profiler (Kineto, as torch.profiler.profile) with the ops' input shapes:
// CPU ops, and with `cuda` the CUDA kernels too. The autograd engine's threads inherit it.
char* promptir_profiler_start(bool cuda) {
  return guarded([&] {
    using namespace torch::profiler::impl;
    // Kineto asks CUDA for its devices even for a CPU trace and logs an ERROR line where there
    // is no driver; a CPU trace needs no GPU, so its log is silenced (5: above ERROR) unless the
    // user set a level. It is read when Kineto first initialises, i.e. in prepareProfiler below.
    // setenv: call this while no other thread reads the environment (bench's main thread does).
    if (!cuda) setenv("KINETO_LOG_LEVEL", "5", /*overwrite=*/0);
    ProfilerConfig config(ProfilerState::KINETO, /*report_input_shapes=*/true);
    std::set<ActivityType> activities{ActivityType::CPU};
    if (cuda) activities.insert(ActivityType::CUDA);
    torch::autograd::profiler::prepareProfiler(config, activities);
    torch::autograd::profiler::enableProfiler(config, activities);
  });
}

// Stops the profiler; with a `path`, writes what it recorded there as a Chrome trace (JSON).
char* promptir_profiler_stop(const char* path) {
  return guarded([&] {
    auto result = torch::autograd::profiler::disableProfiler();
    if (path != nullptr && result) result->save(path);
  });
}

// One AdamW step over n parameters with libtorch's fused kernel (CPU or CUDA), as
// torch.optim.AdamW(fused=True) takes it: the step counts (0-d float tensors on the
// parameters' device) are incremented first; with `found_inf` (nullable) a step whose gradients
// overflowed changes nothing and its count is taken back; `grad_scale` (nullable) divides the
// gradients inside the kernel.
char* promptir_fused_adamw(at::Tensor** params, at::Tensor** grads, at::Tensor** exp_avgs,
                           at::Tensor** exp_avg_sqs, at::Tensor** steps, size_t n, double lr,
                           double beta1, double beta2, double weight_decay, double eps,
                           at::Tensor* grad_scale, at::Tensor* found_inf) {
  return guarded([&] {
    auto step_list = list(steps, n);
    at::_foreach_add_(step_list, 1);
    at::_fused_adamw_(list(params, n), list(grads, n), list(exp_avgs, n), list(exp_avg_sqs, n),
                      {}, step_list, lr, beta1, beta2, weight_decay, eps, /*amsgrad=*/false,
                      /*maximize=*/false, maybe(grad_scale), maybe(found_inf));
    if (found_inf != nullptr) {
      std::vector<at::Tensor> inf(n, *found_inf);
      at::_foreach_sub_(step_list, inf);
    }
  });
}

// Multiplies every gradient by `inv_scale` in place and sets `found_inf` to 1 if any value is
// inf/NaN (GradScaler.unscale_), without a host sync.
char* promptir_amp_unscale(at::Tensor** grads, size_t n, at::Tensor* found_inf,
                           at::Tensor* inv_scale) {
  return guarded([&] {
    at::_amp_foreach_non_finite_check_and_unscale_(list(grads, n), *found_inf, *inv_scale);
  });
}

// targets[i] += weight * (ends[i] - targets[i]) for every i, in place (the weights' EMA update,
// as torch.optim.swa_utils does it: one multi-tensor kernel instead of one launch per tensor).
char* promptir_foreach_lerp(at::Tensor** targets, at::Tensor** ends, size_t n, double weight) {
  return guarded([&] { at::_foreach_lerp_(list(targets, n), list(ends, n), weight); });
}

// ---- torch.distributed (c10d) ----

struct PromptirDist {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout{0};
  bool nccl = false;
  int rank = 0;
  int world = 1;
  // Every rank counts up promptir/alive/<rank> in the store while it lives, so that after a
  // failed collective the survivors can tell which ranks are gone.
  std::atomic<bool> stop{false};
  std::thread heartbeat;
};

static std::string alive_key(int rank) { return "promptir/alive/" + std::to_string(rank); }

// Joins the group of `world` ranks as `rank`: a TCPStore at host:port (served by this process
// when `is_server`), then a Gloo (CPU) or NCCL (CUDA) process group. The rendezvous and Gloo's
// collectives fail after `timeout_ms` instead of waiting forever; NCCL's watchdog aborts the
// process after it (see `finish`).
char* promptir_dist_init(const char* host, int port, bool is_server, int rank, int world,
                         bool nccl, int64_t timeout_ms, void** out) {
  return guarded([&] {
    auto d = std::make_unique<PromptirDist>();
    d->timeout = std::chrono::milliseconds(timeout_ms);
    d->nccl = nccl;
    d->rank = rank;
    d->world = world;
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<std::uint16_t>(port);
    opts.isServer = is_server;
    opts.numWorkers = world;
    opts.waitWorkers = false;
    opts.timeout = d->timeout;
    d->store = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    if (nccl) {
#ifdef PROMPTIR_NCCL
      auto o = c10d::ProcessGroupNCCL::Options::create();
      o->timeout = d->timeout;
      d->backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(d->store, rank, world, o);
#else
      TORCH_CHECK(false, "this promptir was built without NCCL (no CUDA/NCCL headers in the venv)");
#endif
    } else {
      auto o = c10d::ProcessGroupGloo::Options::create_default(d->timeout);
      d->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(d->store, rank, world, o);
    }
    auto beat_store = d->store->clone();
    PromptirDist* raw = d.get();
    raw->heartbeat = std::thread([raw, beat_store] {
      for (int64_t n = 0; !raw->stop.load(); ++n) {
        try {
          beat_store->set(alive_key(raw->rank), std::to_string(n));
        } catch (...) {
          // The store is gone (its server exited): nothing to report from here.
        }
        for (int i = 0; i < 5 && !raw->stop.load(); ++i)
          std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    });
    *out = d.release();
  });
}

// Waits for a collective. Gloo's waits here, up to the timeout, and fails with an error. NCCL's
// is only ordered before the current stream's later work: given a timeout, NCCL's wait would
// block the host until the collective ran, one sync per gradient bucket. Its watchdog enforces
// the group's timeout instead, by aborting the process (as under PyTorch's DDP).
static void finish(PromptirDist* d, const c10::intrusive_ptr<c10d::Work>& work) {
  if (d->nccl) {
    work->wait();
  } else {
    work->wait(d->timeout);
  }
}

// Sums `t` over all ranks, in place.
char* promptir_dist_allreduce_sum(void* h, at::Tensor* t) {
  return guarded([&] {
    auto* d = static_cast<PromptirDist*>(h);
    std::vector<at::Tensor> v{*t};
    c10d::AllreduceOptions o;
    o.reduceOp = c10d::ReduceOp::SUM;
    o.timeout = d->timeout;
    finish(d, d->backend->allreduce(v, o));
  });
}

// Copies `t` of rank `root` to every rank, in place.
char* promptir_dist_broadcast(void* h, at::Tensor* t, int root) {
  return guarded([&] {
    auto* d = static_cast<PromptirDist*>(h);
    std::vector<at::Tensor> v{*t};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    o.timeout = d->timeout;
    finish(d, d->backend->broadcast(v, o));
  });
}

// After a failed collective: the ranks whose heartbeat stopped within `wait_ms`, or -1 alone when
// the store itself is unreachable (its server, rank 0 or the launcher, is gone).
char* promptir_dist_lost_ranks(void* h, int64_t wait_ms, int* out, size_t* n) {
  return guarded([&] {
    auto* d = static_cast<PromptirDist*>(h);
    *n = 0;
    auto read = [&](std::vector<std::string>& v) {
      auto s = d->store->clone();
      for (int r = 0; r < d->world; ++r) {
        auto key = alive_key(r);
        if (s->check({key})) {
          auto value = s->get(key);
          v[r] = std::string(value.begin(), value.end());
        }
      }
    };
    std::vector<std::string> before(d->world), after(d->world);
    try {
      read(before);
      std::this_thread::sleep_for(std::chrono::milliseconds(wait_ms));
      read(after);
    } catch (...) {
      out[(*n)++] = -1;
      return;
    }
    for (int r = 0; r < d->world; ++r)
      if (r != d->rank && before[r] == after[r]) out[(*n)++] = r;
  });
}

// Small strings through the rendezvous store (the run's name, from rank 0 to the others).
char* promptir_dist_store_set(void* h, const char* key, const char* value) {
  return guarded([&] {
    auto* d = static_cast<PromptirDist*>(h);
    std::string v(value);
    d->store->set(key, std::vector<uint8_t>(v.begin(), v.end()));
  });
}

// Waits (up to the timeout) for `key`; `*value` is malloc'ed, freed by promptir_free_error.
char* promptir_dist_store_get(void* h, const char* key, char** value) {
  return guarded([&] {
    auto* d = static_cast<PromptirDist*>(h);
    auto v = d->store->get(key);
    std::string s(v.begin(), v.end());
    *value = copy_message(s.c_str());
  });
}

// First writer wins: sets `key` to `value` unless it holds one already; `*current` (malloc'ed)
// is what the key holds afterwards. A TCPStore serves these one at a time, so every rank
// reads the same winner.
char* promptir_dist_store_first(void* h, const char* key, const char* value, char** current) {
  return guarded([&] {
    auto* d = static_cast<PromptirDist*>(h);
    std::string v(value);
    auto now = d->store->compareSet(key, {}, std::vector<uint8_t>(v.begin(), v.end()));
    std::string s(now.begin(), now.end());
    *current = copy_message(s.c_str());
  });
}

// Whether `key` holds a value, without waiting for one.
char* promptir_dist_store_has(void* h, const char* key, bool* out) {
  return guarded([&] {
    auto* d = static_cast<PromptirDist*>(h);
    *out = d->store->check({std::string(key)});
  });
}

void promptir_dist_free(void* h) {
  auto* d = static_cast<PromptirDist*>(h);
  d->stop.store(true);
  if (d->heartbeat.joinable()) d->heartbeat.join();
  try {
    delete d;
  } catch (...) {
    // Tearing a broken group down must not take the process with it.
  }
}

}  // extern "C"
