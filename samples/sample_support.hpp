// Shared by the actor and supervisor samples.
#pragma once

#include <unistd.h>

#include <string>

namespace mpx::samples {

// One line, one write(2): lines of concurrent processes never interleave.
inline void say(const std::string& line) {
  std::string s = line + "\n";
  [[maybe_unused]] auto n = ::write(1, s.data(), s.size());
}

}  // namespace mpx::samples
