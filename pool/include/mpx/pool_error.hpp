// mpx/pool_error.hpp: what a Pool and its results throw. All are mpx::Error.
//
//   PoolError         misuse (Pool(0), maxtasksperchild <= 0, a task submitted
//                     after close() or terminate(), join() before close(),
//                     successful() before ready()), a pool terminated with the
//                     task pending, or a worker initializer that threw
//   WorkerLost        the worker running the task died (signal, exit, abort);
//                     pid() and exitcode() say which and how
//   TaskTimeout       the task ran longer than its limit; its worker was
//                     killed and replaced. A TimeoutError, as is the error of
//                     AsyncResult::get(timeout) (which leaves the task running)
//   mpx::RemoteError  the task threw: type() and message() of the exception
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>

#include "mpx/error.hpp"

namespace mpx {

class PoolError : public Error {
 public:
  using Error::Error;
};

class WorkerLost : public PoolError {
 public:
  WorkerLost(const std::string& what, pid_t pid, int exitcode) : PoolError(what), pid_(pid), exitcode_(exitcode) {}
  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  // As Process::exitcode(): N for exit(N), -N for death by signal N.
  [[nodiscard]] int exitcode() const noexcept { return exitcode_; }

 private:
  pid_t pid_;
  int exitcode_;
};

class TaskTimeout : public TimeoutError {
 public:
  TaskTimeout(const std::string& what, std::chrono::milliseconds limit) : TimeoutError(what), limit_(limit) {}
  [[nodiscard]] std::chrono::milliseconds limit() const noexcept { return limit_; }

 private:
  std::chrono::milliseconds limit_;
};

}  // namespace mpx
