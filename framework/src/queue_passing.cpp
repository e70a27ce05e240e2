// Queues as arguments of a forkserver or spawn child: the ring's files and
// the readable_fd() eventfd travel with the start request (fd_passing.hpp),
// and the child attaches the same ring (Ring::attach). Pipe ends do the same
// in connection.cpp.
#include <sys/eventfd.h>

#include "mpx/detail/fd_passing.hpp"
#include "mpx/queue.hpp"

namespace mpx::detail {

namespace {
constexpr std::uint32_t kNoGrowth = ~std::uint32_t{0};
}  // namespace

PassedQueue send_queue(const QueueCore& core) {
  PassedQueue passed;
  passed.base = send_fd(core.ring.base_fd(), "a Queue");
  passed.growth = core.ring.growth_fd() >= 0 ? send_fd(core.ring.growth_fd(), "a Queue") : kNoGrowth;
  passed.event = send_fd(core.event_fd.get(), "a Queue");
  passed.options = core.ring.options();
  passed.maxsize = core.maxsize;
  passed.joinable = core.joinable;
  return passed;
}

std::shared_ptr<QueueCore> receive_queue(const PassedQueue& passed) {
  UniqueFd base = receive_fd(passed.base, "a Queue");
  UniqueFd growth = passed.growth != kNoGrowth ? receive_fd(passed.growth, "a Queue") : UniqueFd();
  UniqueFd event = receive_fd(passed.event, "a Queue");
  auto core = std::make_shared<QueueCore>(Ring::attach(passed.options, base.get(), std::move(growth)),
                                          static_cast<std::size_t>(passed.maxsize), std::move(event));
  core->joinable = passed.joinable;
  return core;
}

}  // namespace mpx::detail
