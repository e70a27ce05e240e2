// Helpers for the queue and pipe suites (the child and the signal are the
// shared ones of tests/support/child_process.hpp).
#pragma once

#include "child_process.hpp"

namespace mpx::test {

// The queue suites' name for the shared test child (child_process.hpp).
using ForkedChild = Child;

}  // namespace mpx::test
