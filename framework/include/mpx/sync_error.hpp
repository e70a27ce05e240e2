// mpx/sync_error.hpp: errors of the synchronisation primitives.
//
// SyncError: misuse - releasing a lock that is not held (or, for RLock and
// Condition, not held by the caller), over-releasing a BoundedSemaphore,
// using a moved-from handle, attaching to memory that holds no such
// primitive, bad construction arguments.
// OwnerDeadError (mpx/lock.hpp) and BrokenBarrierError (mpx/barrier.hpp)
// report the failures of other processes.
// OSError: a system call failed (Python's OSError) where no more specific
// error applies - mapping shared memory for a primitive, a Queue or a Pipe,
// a futex call, the sockets of a Pipe. code() is the errno; what() says what
// was being done and the system's message.
#pragma once

#include <cstring>
#include <string>

#include "mpx/error.hpp"

namespace mpx {

class OSError : public Error {
 public:
  OSError(int code, const std::string& doing)
      : Error(doing + ": " + std::strerror(code) + " (errno " + std::to_string(code) + ")"), code_(code) {}
  [[nodiscard]] int code() const noexcept { return code_; }

 private:
  int code_;
};

class SyncError : public Error {
 public:
  using Error::Error;
};

}  // namespace mpx
