// mpx/actors/detail/death_watch.hpp: tells an endpoint at once when a process it waits on exits.
//
// A request or monitor aimed at another host is failed/fired by the
// gateway's sweep, which probes the host's liveness every 10 ms. DeathWatch
// shortens that to the kernel's notice: it keeps one pidfd per watched pid
// in an epoll set on a thread of its own (started on the first watch()) and
// calls `on_death` once a watched process has exited (pidfd readable). The
// sweep still decides what failed (it checks incarnations and reads every
// record the dead host wrote first); DeathWatch only says "sweep now".
//
// - watch(pid) is cheap when pid is already watched (a map lookup under a
//   mutex); any thread may call it. A pid that no longer exists calls
//   on_death at once. At most kMaxWatched pids are watched; beyond that the
//   periodic sweep alone covers the rest.
// - pid reuse: a pid watched after its process died and the pid was reused
//   watches the newcomer; the periodic sweep still finds the death.
// - on_death runs on the watch thread; it must not block.
// - Not fork-safe as an object: a forked child makes its own (the runtime
//   replaces its globals in the child).
#pragma once

#include <sys/types.h>

#include <functional>
#include <mutex>
#include <thread>
#include <unordered_map>

#include "mpx/detail/unique_fd.hpp"

namespace mpx::actors::detail {

class DeathWatch {
 public:
  static constexpr std::size_t kMaxWatched = 512;

  explicit DeathWatch(std::function<void()> on_death);
  ~DeathWatch();  // stops the thread, closes every pidfd
  DeathWatch(const DeathWatch&) = delete;
  DeathWatch& operator=(const DeathWatch&) = delete;

  void watch(pid_t pid);

 private:
  void run();

  std::function<void()> on_death_;
  std::mutex mutex_;
  std::unordered_map<pid_t, mpx::detail::UniqueFd> watched_;
  mpx::detail::UniqueFd epoll_;
  mpx::detail::UniqueFd stop_;  // eventfd: stops the thread
  std::thread thread_;
  bool failed_ = false;  // no epoll/eventfd/thread: the sweep alone works
};

}  // namespace mpx::actors::detail
