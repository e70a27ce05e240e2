// <mpx/mpx.hpp>: everything mpx offers, in one include.
#pragma once

#include "mpx/error.hpp"
#include "mpx/serialization.hpp"

#include "mpx/forkserver.hpp"
#include "mpx/logging.hpp"
#include "mpx/process.hpp"
#include "mpx/context.hpp"

#include "mpx/barrier.hpp"
#include "mpx/condition.hpp"
#include "mpx/event.hpp"
#include "mpx/lock.hpp"
#include "mpx/semaphore.hpp"
#include "mpx/shared_memory.hpp"
#include "mpx/sharedctypes.hpp"
#include "mpx/shareable_list.hpp"
#include "mpx/shared_memory_manager.hpp"
#include "mpx/synchronize.hpp"

#include "mpx/connection.hpp"
#include "mpx/pipe.hpp"
#include "mpx/queue.hpp"
#include "mpx/wait.hpp"

#include "mpx/auth.hpp"
#include "mpx/listener.hpp"
#include "mpx/socket_connection.hpp"

// The pool, the manager and the actor layer sit above the framework; include them when they are there.
#if __has_include("mpx/pool.hpp")
#include "mpx/pool.hpp"
#endif
#if __has_include("mpx/manager.hpp")
#include "mpx/manager.hpp"
#endif
#if __has_include("mpx/actors.hpp")
#include "mpx/actors.hpp"
#endif
