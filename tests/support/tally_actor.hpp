// The counting messages the supervisor and standby tests send (Bump counts,
// Read -> the count, WhoAmI -> the pid of the process the actor runs in)
// and the behaviour that answers them. Each test binary registers its own
// "tally" actor from tally_behavior() (MPX_REGISTER_ACTOR once per binary).
#pragma once

#include <unistd.h>

#include <memory>

#include "mpx/actors.hpp"

namespace mpx::test {

struct Bump {
  template <class A>
  void serialize(A&) {}
};
struct Read {
  template <class A>
  void serialize(A&) {}
};
struct WhoAmI {
  template <class A>
  void serialize(A&) {}
};

inline mpx::actors::Behavior tally_behavior(int start) {
  auto n = std::make_shared<int>(start);
  return {[n](const Bump&) { ++*n; }, [n](const Read&) { return *n; },
          [](const WhoAmI&) { return static_cast<int>(::getpid()); }};
}

}  // namespace mpx::test
