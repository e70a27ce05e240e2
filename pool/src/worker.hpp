// pool/src/worker.hpp: what a pool worker process runs.
#pragma once

#include <cstdint>
#include <string>

#include <cereal/types/string.hpp>
#include <cereal/types/vector.hpp>

#include "mpx/detail/pool_task.hpp"

namespace mpx::detail::pool {

struct WorkerConfig {
  std::string socket_name;  // the pool's abstract Unix socket (without the leading NUL)
  std::uint64_t max_tasks = 0;  // 0: no limit (maxtasksperchild)
  std::uint64_t initializer_invoker = 0;  // 0: none
  std::uint64_t initializer_target = 0;
  Bytes initializer_arguments;
  template <class A>
  void serialize(A& ar) {
    ar(socket_name, max_tasks, initializer_invoker, initializer_target, initializer_arguments);
  }
};

// The worker's whole life; registered for the fork server.
void mpx_pool_worker_main(WorkerConfig config);

}  // namespace mpx::detail::pool
