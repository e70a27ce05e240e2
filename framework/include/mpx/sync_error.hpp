// mpx/sync_error.hpp: errors of the synchronisation primitives.
//
// SyncError: misuse - releasing a lock that is not held (or, for RLock and
// Condition, not held by the caller), over-releasing a BoundedSemaphore,
// using a moved-from handle, attaching to memory that holds no such
// primitive, bad construction arguments.
// OwnerDeadError (mpx/lock.hpp) and BrokenBarrierError (mpx/barrier.hpp)
// report the failures of other processes.
#pragma once

#include "mpx/error.hpp"

namespace mpx {

class SyncError : public Error {
 public:
  using Error::Error;
};

}  // namespace mpx
