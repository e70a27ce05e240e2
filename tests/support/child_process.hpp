// A child process for tests, always killed and reaped (also when an assertion
// fails), and a one-byte signal between processes. Assertions cannot cross
// fork: children report through their exit code or a Signal.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <functional>
#include <optional>
#include <stdexcept>

#include "mpx/process.hpp"

namespace mpx::test {

// Runs `body` in a child (mpx::Process, fork start method) at construction.
// Its return value is the exit code; an escaping exception gives exit code 99.
class Child {
 public:
  explicit Child(std::function<int()> body)
      : process_([body] {
          int code = 99;
          try {
            code = body();
          } catch (const std::exception&) {
          }
          mpx::exit(code);
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
  // Sends `sig` through the process' pidfd (never a recycled pid).
  void kill(int sig = SIGKILL) const {
    if (sig == SIGKILL) process_.handle().kill();
    else if (sig == SIGTERM) process_.handle().terminate();
    else ::kill(process_.pid(), sig);
  }
  // Exit code (or -signal), or nullopt if still running after `timeout`.
  std::optional<int> wait(std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    if (!process_.join(timeout)) return std::nullopt;
    return process_.exitcode();
  }
  // Exit code (or -signal); -1000 if still running after `timeout`, then killed.
  int join(std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    if (auto code = wait(timeout)) return *code;
    process_.kill();
    process_.join();
    return -1000;
  }

 private:
  mpx::Process process_;
};

// One-shot signal between processes: a pipe. wait() returns the byte
// written, or 0 on timeout (so it also reads as a bool).
class Signal {
 public:
  Signal() {
    if (::pipe2(fds_, O_CLOEXEC) != 0) throw std::runtime_error("pipe2 failed");
  }
  Signal(const Signal&) = delete;
  Signal& operator=(const Signal&) = delete;
  ~Signal() {
    ::close(fds_[0]);
    ::close(fds_[1]);
  }
  void notify(char c = 'x') const { [[maybe_unused]] auto n = ::write(fds_[1], &c, 1); }
  char wait(std::chrono::milliseconds timeout = std::chrono::seconds(20)) const {
    pollfd p{fds_[0], POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return 0;
    char c = 0;
    return ::read(fds_[0], &c, 1) == 1 ? c : 0;
  }

 private:
  int fds_[2];
};

}  // namespace mpx::test
