// The native layer: the few libtorch calls tch 0.24 does not bind, behind a C API.
//
// Tensors cross as tch's handles, which are `at::Tensor*`. Every function returns nullptr on
// success or an error message (allocated here, freed by promptir_free_error); no C++ exception
// ever unwinds into Rust. Only narrow ATen headers are included, to keep this file's build short.

#include <ATen/autocast_mode.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/_amp_foreach_non_finite_check_and_unscale.h>
#include <ATen/ops/_foreach_add.h>
#include <ATen/ops/_foreach_sub.h>
#include <ATen/ops/_fused_adamw.h>

#include <cstdlib>
#include <cstring>
#include <exception>
#include <optional>
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

}  // extern "C"
