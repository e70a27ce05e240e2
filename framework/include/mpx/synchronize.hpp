// mpx/synchronize.hpp: every synchronisation primitive, as Python's
// multiprocessing.synchronize: Lock, RLock, Semaphore, BoundedSemaphore,
// Event, Condition, Barrier. Each works across processes (shared by fork, or
// placed in a named SharedMemory where it offers create_at()/attach_at()),
// with timed waits, on futexes in shared memory. See each header's contract.
#pragma once

#include "mpx/barrier.hpp"
#include "mpx/condition.hpp"
#include "mpx/event.hpp"
#include "mpx/lock.hpp"
#include "mpx/semaphore.hpp"
#include "mpx/sync_error.hpp"
