// See README: a stand-in for gloo's header, declaring what ProcessGroupGloo.hpp names. Its
// inline setTimeout names Context::setTimeout; the code that calls it is libtorch's own.
#pragma once
#include <chrono>
namespace gloo {
class Context {
 public:
  void setTimeout(std::chrono::milliseconds timeout);
};
}  // namespace gloo
