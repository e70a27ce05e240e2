// Helpers for the queue and pipe suites: a forked child guarded by RAII (kill
// and reap on scope exit, also when an assertion fails), and a pipe to hear
// from it. Children report through their exit code; gtest assertions do not
// work inside them.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <exception>
#include <functional>
#include <optional>
#include <stdexcept>
#include <utility>

namespace mpx::test {

class ForkedChild {
 public:
  // Runs fn() in a forked child; its return value is the exit code, an
  // escaping exception exits with 99.
  explicit ForkedChild(std::function<int()> fn) {
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork failed");
    if (pid_ == 0) {
      int code = 98;
      try {
        code = fn();
      } catch (...) {
        code = 99;
      }
      ::_exit(code);
    }
  }
  ForkedChild(const ForkedChild&) = delete;
  ForkedChild& operator=(const ForkedChild&) = delete;
  ~ForkedChild() {
    if (pid_ > 0 && !status_) {
      ::kill(pid_, SIGKILL);
      int st = 0;
      ::waitpid(pid_, &st, 0);
    }
  }
  [[nodiscard]] pid_t pid() const { return pid_; }
  // Exit code (or -signal), or nullopt if it is still running after `timeout`.
  std::optional<int> wait(std::chrono::milliseconds timeout = std::chrono::seconds(30)) {
    if (status_) return status_;
    auto end = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      int st = 0;
      pid_t r = ::waitpid(pid_, &st, WNOHANG);
      if (r == pid_) {
        status_ = WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
        return status_;
      }
      if (std::chrono::steady_clock::now() >= end) return std::nullopt;
      ::usleep(1000);
    }
  }
  void kill(int sig = SIGKILL) { ::kill(pid_, sig); }

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
};

// A one-byte signal between processes: the child writes, the parent waits.
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
  void notify() const {
    char c = 1;
    [[maybe_unused]] auto n = ::write(fds_[1], &c, 1);
  }
  bool wait(std::chrono::milliseconds timeout = std::chrono::seconds(30)) const {
    pollfd p{fds_[0], POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(timeout.count())) != 1) return false;
    char c;
    return ::read(fds_[0], &c, 1) == 1;
  }

 private:
  int fds_[2];
};

}  // namespace mpx::test
