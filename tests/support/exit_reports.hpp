// Collects the exit reports a supervisor's on_exit callback gets, and waits
// for them without polling.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "mpx/actors.hpp"

namespace mpx::test {

struct ReportLog {
  std::mutex m;
  std::condition_variable cv;
  std::vector<mpx::actors::ExitReport> reports;

  // Supervisor options with `restarts` restarts a minute and the collecting
  // callback (the log must outlive the supervisor).
  mpx::actors::SupervisorOptions options(int restarts = 10) {
    return mpx::actors::SupervisorOptions()
        .with_intensity(restarts, std::chrono::milliseconds(60000))
        .with_on_exit([this](const mpx::actors::ExitReport& r) {
          std::lock_guard lock(m);
          reports.push_back(r);
          cv.notify_all();
        });
  }
  // Whether `n` reports came within `timeout`.
  bool wait_for(std::size_t n, std::chrono::milliseconds timeout = std::chrono::milliseconds(60000)) {
    std::unique_lock lock(m);
    return cv.wait_for(lock, timeout, [&] { return reports.size() >= n; });
  }
  std::vector<mpx::actors::ExitReport> copy() {
    std::lock_guard lock(m);
    return reports;
  }
  // The reports so far by child id, each child's in order.
  std::map<std::string, std::vector<mpx::actors::ExitReport>> by_child() {
    std::lock_guard lock(m);
    std::map<std::string, std::vector<mpx::actors::ExitReport>> out;
    for (const auto& r : reports) out[r.child].push_back(r);
    return out;
  }
};

}  // namespace mpx::test
