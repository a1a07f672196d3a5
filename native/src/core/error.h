// The error type of the addon's C++ side, apart from Node-API so that CUDA sources share it.
#pragma once
#include <stdexcept>
#include <string>

namespace tessera {

/** An error whose message names the op and the problem; bindings turn it into a JS Error. */
struct OpError : std::runtime_error {
  explicit OpError(const std::string& msg) : std::runtime_error(msg) {}
};

}  // namespace tessera
