// The squaring message the host tests send (Square{x} -> x * x + offset)
// and the name of a start method. Each test binary composes its own
// "squarer" actor from square_handler() and registers it itself
// (MPX_REGISTER_ACTOR once per binary).
#pragma once

#include <string>

#include "mpx/process.hpp"

namespace mpx::test {

struct Square {
  int x = 0;
  template <class A>
  void serialize(A& ar) {
    ar(x);
  }
};

// The Square handler of an actor spawned with `offset`.
inline auto square_handler(int offset) {
  return [offset](const Square& m) { return m.x * m.x + offset; };
}

inline std::string start_method_name(mpx::StartMethod method) {
  switch (method) {
    case mpx::StartMethod::fork: return "fork";
    case mpx::StartMethod::forkserver: return "forkserver";
    case mpx::StartMethod::spawn: return "spawn";
  }
  return "?";
}

}  // namespace mpx::test
