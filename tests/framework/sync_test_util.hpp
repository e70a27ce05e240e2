// Helpers for the shared-memory and synchronisation tests: a child process
// that is always killed and reaped, and a pipe to wait for a child's signal.
// Assertions cannot cross fork: children report through their exit code.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <exception>
#include <functional>
#include <stdexcept>
#include <string>
#include <thread>

#include "mpx/process.hpp"
#include "test_support.hpp"

namespace mpx::test {

// A child process (mpx::Process, fork start method) running `body`; a
// non-zero return becomes its exit code, an exception exit code 1. Always
// killed and reaped by the destructor.
class Child {
 public:
  explicit Child(std::function<int()> body)
      : process_([body] {
          if (int code = body(); code != 0) mpx::exit(code);
        }) {
    process_.start();
  }
  Child(const Child&) = delete;
  Child& operator=(const Child&) = delete;
  ~Child() {
    if (!process_.exitcode()) {
      process_.kill();
      process_.join();
    }
  }
  [[nodiscard]] pid_t pid() const { return process_.pid(); }
  void kill(int sig = SIGKILL) const { ::kill(process_.pid(), sig); }
  // Exit code, -signal, or -1000 when still running after `timeout` (then killed).
  int join(std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    if (!process_.join(timeout)) {
      process_.kill();
      process_.join();
      return -1000;
    }
    return *process_.exitcode();
  }

 private:
  mpx::Process process_;
};

// One-shot signal from child to parent (or back): a pipe.
class Signal {
 public:
  Signal() {
    if (::pipe2(fds_, O_CLOEXEC) != 0) throw std::runtime_error("pipe failed");
  }
  Signal(const Signal&) = delete;
  Signal& operator=(const Signal&) = delete;
  ~Signal() {
    ::close(fds_[0]);
    ::close(fds_[1]);
  }
  void notify(char c = 'x') const { [[maybe_unused]] auto n = ::write(fds_[1], &c, 1); }
  // The byte written, or 0 on timeout.
  char wait(std::chrono::milliseconds timeout = std::chrono::seconds(20)) const {
    pollfd p{fds_[0], POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return 0;
    char c = 0;
    return ::read(fds_[0], &c, 1) == 1 ? c : 0;
  }

 private:
  int fds_[2];
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

inline double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace mpx::test
