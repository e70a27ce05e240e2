// Helpers for the shared-memory and synchronisation tests. Child and Signal
// live in tests/support/child_process.hpp.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "child_process.hpp"
#include "test_support.hpp"

namespace mpx::test {

// A shared-memory segment name unique to this process and call:
// "<prefix>_<tag>_<pid>_<n>".
inline std::string unique_segment_name(const std::string& prefix, const std::string& tag) {
  static std::atomic<int> counter{0};
  return prefix + "_" + tag + "_" + std::to_string(::getpid()) + "_" + std::to_string(counter++);
}

inline bool segment_exists(const std::string& name) { return dev_shm_names().count(name) > 0; }

// Unlinks segments by name when the test ends, whatever happened.
struct SegmentCleanup {
  std::vector<std::string> names;
  ~SegmentCleanup() {
    for (auto& n : names) ::shm_unlink(("/" + n).c_str());
  }
};

// Polls `condition` every 10 ms up to `timeout`.
inline bool eventually(const std::function<bool()>& condition,
                       std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  auto end = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < end) {
    if (condition()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return condition();
}

// Waits until thread `tid` of `pid` (a single-threaded child: tid == pid) is
// asleep in a futex wait; false if it never was within `timeout`.
inline bool eventually_asleep_in_futex(pid_t pid, pid_t tid = 0,
                                       std::chrono::milliseconds timeout = std::chrono::seconds(10)) {
  return eventually([&] { return asleep_in_futex(pid, tid ? tid : pid); }, timeout);
}

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Gives the test a shared-memory tracker of its own: sets MPX_SHM_TRACKER_TAG
// (inherited by every child forked meanwhile) to a tag no other test uses, so
// the first child that creates a segment starts a fresh tracker, whatever
// tracker an earlier test left lingering. On the way out it restores the
// variable and removes the tracker's hidden table file, also when the test
// failed (a tracker still lingering then just finds it gone). The test
// process itself should not use shared memory meanwhile: it would keep the
// tracker alive until it exits.
class PrivateTracker {
 public:
  PrivateTracker() {
    static int counter = 0;
    tag_ = "test" + std::to_string(::getpid()) + "_" + std::to_string(counter++);
    if (const char* old = std::getenv(kVariable)) old_ = old;
    ::setenv(kVariable, tag_.c_str(), 1);
  }
  ~PrivateTracker() {
    if (old_) ::setenv(kVariable, old_->c_str(), 1);
    else ::unsetenv(kVariable);
    ::unlink(state_path().c_str());
  }
  PrivateTracker(const PrivateTracker&) = delete;
  PrivateTracker& operator=(const PrivateTracker&) = delete;
  [[nodiscard]] const std::string& tag() const { return tag_; }
  // The table file (mpx/detail/shm_tracker.hpp).
  [[nodiscard]] std::string state_path() const {
    return "/dev/shm/.mpx-shm-tracker-" + std::to_string(::getuid()) + "-" + tag_;
  }

 private:
  static constexpr const char* kVariable = "MPX_SHM_TRACKER_TAG";
  std::string tag_;
  std::optional<std::string> old_;
};

}  // namespace mpx::test
