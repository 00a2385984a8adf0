// See README: a stand-in for gloo's header, declaring what ProcessGroupGloo.hpp names.
#pragma once
namespace gloo {
namespace transport {
class Device;
class UnboundBuffer;
}  // namespace transport
}  // namespace gloo
