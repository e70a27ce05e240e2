// Supervised hosts on other nodes (ChildSpec::host(...).with_node(peer)).
//
// A supervisor cannot fork a process on another machine, so the node there
// does it: every Node runs a host keeper in its own process, an actor named
// "mpx.hosts" (kHostKeeperName) in front of one thread that starts, stops and
// watches the hosts supervisors of other nodes ask for. That thread is the
// hosts' parent (it forks them, it reaps them: exit codes and signals are as
// exact as for a local host child), and the only thread that forks them, so
// their parent-death signal lasts as long as the Node.
//
// The supervisor side is RemoteHost: start (or restart, or adopt a host that
// still runs after a lost link came back) through a request to the keeper,
// then a long request "tell me when pid P exits" answered when it does, or
// failed at once with NodeDown when that node is lost: either way the
// supervisor's watcher sees exit_fd() readable and handles the exit as a
// local one (restart strategy, intensity, backoff, reports).
//
// Packets from another node reach the keeper at the host name
// kNodeProcessHost, which the receiving node maps to its own process (whose
// endpoint name is pid-based: a supervisor in a nested process of the other
// tree cannot know it).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "mpx/actors/actor_ref.hpp"
#include "mpx/actors/host.hpp"
#include "mpx/detail/unique_fd.hpp"

namespace mpx::actors::detail {

// An exit report's "how" for a child that ended by itself: "exited",
// "killed by signal" (a negative code), or "ended (exit code unknown)" (a
// host on another node whose node was lost). The supervisor and the host
// keeper word it the same.
std::string how_it_ended(const std::optional<int>& code);

inline constexpr std::string_view kNodeProcessHost = "mpx.node";
inline constexpr const char* kHostKeeperName = "mpx.hosts";

// How a remote host's process ended, as its parent (the keeper) saw it.
struct RemoteHostExit {
  std::int64_t pid = 0;
  std::optional<int> exit_code;  // -N: signal N; empty: unknown (node lost)
  std::string how;               // "exited", "killed by signal", "node down: ...", ...
  std::optional<ChildException> exception;
  template <class A>
  void save(A& ar) const {
    ar(pid, exit_code, how, exception.has_value());
    if (exception) ar(exception->type, exception->message);
  }
  template <class A>
  void load(A& ar) {
    bool has_exception = false;
    ar(pid, exit_code, how, has_exception);
    if (has_exception) {
      exception.emplace();
      ar(exception->type, exception->message);
    }
  }
};

// The node side: owns the hosts other nodes' supervisors started here. Made
// by the Node (one per process); its destructor shuts every such host down.
class HostKeeper;
// `connected(node)`: whether that node is connected now (asked by the
// keeper's thread about the nodes of the supervisors it keeps hosts for);
// orphan_timeout: NodeOptions::orphan_host_timeout.
std::shared_ptr<HostKeeper> start_host_keeper(const std::string& node_name, std::chrono::milliseconds orphan_timeout,
                                              std::function<bool(const std::string&)> connected);
void stop_host_keeper(std::shared_ptr<HostKeeper> keeper);

// The supervisor side: one per host child on another node.
class RemoteHost {
 public:
  RemoteHost(std::string node, std::string id, std::string owner);
  RemoteHost(const RemoteHost&) = delete;
  RemoteHost& operator=(const RemoteHost&) = delete;
  ~RemoteHost();

  [[nodiscard]] const std::string& node() const { return node_; }
  // Starts the host there (a new host, a restart of a dead one keeping its
  // mailbox, or the one still running): its pid. Throws NodeDown, ActorError
  // (refused there), TimeoutError (options.spawn_timeout + 5 s).
  pid_t start(const HostOptions& options, const std::vector<ActorSpec>& actors);
  [[nodiscard]] pid_t pid() const { return pid_; }
  // After a start that threw: exit() says why (the supervisor counts it as an exit).
  void fail_start(std::string why);
  // Readable once the current process' end is known (exit() has it).
  [[nodiscard]] int exit_fd() const { return event_.get(); }
  [[nodiscard]] std::optional<RemoteHostExit> exit() const;
  // Poison pills, the timeout, SIGTERM, SIGKILL, as a local host; the mailbox
  // stays unless `release` (then the host is forgotten there). Never throws:
  // an unreachable node is logged and reported as an unknown end.
  RemoteHostExit stop(std::chrono::milliseconds timeout, bool release);
  [[nodiscard]] ActorRef actor(const std::string& name) const { return ActorRef(node_, id_, name, 0, 0); }

 private:
  void watch(pid_t pid);  // the waiter thread's body
  void finish_waiter();

  std::string node_, id_, owner_;
  ActorRef keeper_;
  pid_t pid_ = 0;
  mpx::detail::UniqueFd event_;
  mutable std::mutex mutex_;
  std::optional<RemoteHostExit> exit_;  // of pid_
  std::atomic<bool> cancel_{false};
  std::thread waiter_;
};

}  // namespace mpx::actors::detail
