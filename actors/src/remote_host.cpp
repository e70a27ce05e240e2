// Supervised hosts on other nodes (see remote_host.hpp).
#include "remote_host.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <deque>
#include <map>

#include "mpx/actors/behavior.hpp"
#include "mpx/actors/context.hpp"
#include "mpx/actors/errors.hpp"
#include "mpx/actors/registry.hpp"
#include "mpx/actors/response.hpp"
#include "mpx/detail/demangle.hpp"
#include "mpx/logging.hpp"
#include "host_spec_wire.hpp"
#include "runtime.hpp"

namespace mpx::actors::detail {

namespace {

// ---- the keeper's messages (both nodes run this library)

// Start host `id` for `owner` ("<node>/<supervisor>"): a new one, a restart
// of a dead one (same mailbox), or the one that runs (adopted). Reply: its pid.
struct StartRemoteHost {
  std::string owner, id;
  HostOptions options;
  std::vector<ActorSpec> actors;
  template <class A>
  void save(A& ar) const {
    ar(owner, id);
    save_host_spec(ar, options, actors);
  }
  template <class A>
  void load(A& ar) {
    ar(owner, id);
    load_host_spec(ar, options, actors);
  }
};
// Answered with a RemoteHostExit once process `pid` of host `id` has ended.
struct WaitRemoteHostExit {
  std::string owner, id;
  std::int64_t pid = 0;
  template <class A>
  void serialize(A& ar) {
    ar(owner, id, pid);
  }
};
// Stops host `id` (HostOptions' order; the mailbox stays unless `release`).
struct StopRemoteHost {
  std::string owner, id;
  std::int64_t timeout_ms = 0;
  bool release = false;
  template <class A>
  void serialize(A& ar) {
    ar(owner, id, timeout_ms, release);
  }
};

}  // namespace

std::string how_it_ended(const std::optional<int>& code) {
  if (!code) return "ended (exit code unknown)";
  return *code < 0 ? "killed by signal" : "exited";
}

// ---- the node side

class HostKeeper {
 public:
  HostKeeper(std::string node_name, std::chrono::milliseconds orphan_timeout,
             std::function<bool(const std::string&)> connected)
      : node_(std::move(node_name)), orphan_timeout_(orphan_timeout), connected_(std::move(connected)) {
    wake_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!wake_) throw ActorError("mpx nodes: eventfd failed");
    thread_ = std::thread([this] { run(); });
  }
  HostKeeper(const HostKeeper&) = delete;
  HostKeeper& operator=(const HostKeeper&) = delete;
  ~HostKeeper() {
    post([this] { shut_everything_down(); });
    {
      std::lock_guard lock(mutex_);
      closing_ = true;
    }
    wake();
    thread_.join();
  }

  // Runs `job` on the keeper thread (false once the keeper is closing).
  bool post(std::function<void()> job) {
    {
      std::lock_guard lock(mutex_);
      if (closing_) return false;
      jobs_.push_back(std::move(job));
    }
    wake();
    return true;
  }

  void start(const StartRemoteHost& m, ResponsePromise<std::int64_t> promise);
  void wait_exit(const WaitRemoteHostExit& m, ResponsePromise<RemoteHostExit> promise);
  void stop(const StopRemoteHost& m, ResponsePromise<RemoteHostExit> promise);

 private:
  struct Entry {
    std::string owner;
    Host host;
    std::optional<ProcessHandle> handle;  // of the current process
    pid_t pid = 0;
    std::optional<RemoteHostExit> ended;  // of pid
    std::vector<ResponsePromise<RemoteHostExit>> waiters;
    // Since when the owner's node is not connected (reset when it is).
    std::optional<std::chrono::steady_clock::time_point> owner_gone_since;
  };

  void wake() {
    std::uint64_t one = 1;
    [[maybe_unused]] auto w = ::write(wake_.get(), &one, sizeof one);
  }
  void run();
  // Records the end of entry's process and answers its waiters.
  void ended(Entry& entry, std::string how);
  // Whether `owner` may act on `id`; else refuses `promise`.
  template <class P>
  Entry* owned(const std::string& owner, const std::string& id, P& promise);
  void shut_everything_down();
  // Shuts down and forgets the hosts whose owner's node has been down for
  // orphan_timeout_.
  void release_orphans();

  std::string node_;
  std::chrono::milliseconds orphan_timeout_;
  std::function<bool(const std::string&)> connected_;
  mpx::detail::UniqueFd wake_;
  std::mutex mutex_;
  std::deque<std::function<void()>> jobs_;
  bool closing_ = false;
  std::map<std::string, Entry> hosts_;  // keeper thread only
  std::thread thread_;
};

void HostKeeper::run() {
  for (;;) {
    std::vector<pollfd> fds{{wake_.get(), POLLIN, 0}};
    std::vector<Entry*> watched;
    for (auto& [id, entry] : hosts_)
      if (!entry.ended) {
        fds.push_back({entry.handle->sentinel(), POLLIN, 0});
        watched.push_back(&entry);
      }
    ::poll(fds.data(), fds.size(), 500);
    if (fds[0].revents & POLLIN) {
      std::uint64_t n;
      [[maybe_unused]] auto r = ::read(wake_.get(), &n, sizeof n);
    }
    for (std::size_t k = 0; k < watched.size(); ++k)
      if ((fds[k + 1].revents & (POLLIN | POLLHUP)) && !watched[k]->host.is_alive())
        ended(*watched[k], how_it_ended(watched[k]->host.exitcode()));
    std::deque<std::function<void()>> jobs;
    bool closing = false;
    {
      std::lock_guard lock(mutex_);
      jobs.swap(jobs_);
      closing = closing_;
    }
    for (auto& job : jobs) {
      try {
        job();
      } catch (const std::exception& e) {
        get_logger()->error("mpx nodes: {}: host keeper: {}", node_, e.what());
      }
    }
    if (closing && jobs.empty()) return;
    release_orphans();
  }
}

void HostKeeper::release_orphans() {
  if (orphan_timeout_.count() <= 0 || !connected_) return;
  const auto now = std::chrono::steady_clock::now();
  for (auto it = hosts_.begin(); it != hosts_.end();) {
    Entry& entry = it->second;
    const std::string owner_node = entry.owner.substr(0, entry.owner.find('/'));
    if (connected_(owner_node)) {
      entry.owner_gone_since.reset();
    } else if (!entry.owner_gone_since) {
      entry.owner_gone_since = now;
    } else if (now - *entry.owner_gone_since >= orphan_timeout_) {
      get_logger()->warn("mpx nodes: {}: node '{}' of supervisor {} has been down for {} ms: shutting down its host {}",
                         node_, owner_node, entry.owner, orphan_timeout_.count(), it->first);
      try {
        entry.host.shutdown(!entry.ended && entry.handle->is_alive() ? std::chrono::milliseconds(5000)
                                                                     : std::chrono::milliseconds(0));
        if (!entry.ended) ended(entry, "orphaned: node '" + owner_node + "' of its supervisor is gone");
      } catch (const std::exception& e) {
        get_logger()->error("mpx nodes: {}: shutting down orphaned host {}: {}", node_, it->first, e.what());
      }
      it = hosts_.erase(it);
      continue;
    }
    ++it;
  }
}

void HostKeeper::ended(Entry& entry, std::string how) {
  RemoteHostExit exit{entry.pid, entry.host.exitcode(), std::move(how), entry.host.exception()};
  entry.ended = exit;
  for (auto& waiter : entry.waiters) waiter.deliver(exit);
  entry.waiters.clear();
}

template <class P>
HostKeeper::Entry* HostKeeper::owned(const std::string& owner, const std::string& id, P& promise) {
  auto it = hosts_.find(id);
  if (it == hosts_.end()) return nullptr;
  if (it->second.owner != owner) {
    promise.deliver_error("mpx::actors::ActorError", "host '" + id + "' on node '" + node_ + "' belongs to supervisor " +
                                                         it->second.owner + ", not " + owner);
    return nullptr;
  }
  return &it->second;
}

void HostKeeper::start(const StartRemoteHost& m, ResponsePromise<std::int64_t> promise) {
  if (hosts_.count(m.id) && !owned(m.owner, m.id, promise)) return;
  try {
    auto it = hosts_.find(m.id);
    if (it == hosts_.end()) {
      it = hosts_.emplace(m.id, Entry{m.owner, Host(m.id, m.options, m.actors), std::nullopt, 0, std::nullopt, {}, std::nullopt})
               .first;
      get_logger()->info("mpx nodes: {}: started host {} for supervisor {}", node_, m.id, m.owner);
    } else if (it->second.host.is_alive()) {
      // The supervisor lost this node and came back (or retries a start whose
      // reply it missed): the host kept running.
      get_logger()->info("mpx nodes: {}: supervisor {} took host {} back (pid {})", node_, m.owner, m.id,
                         it->second.pid);
      promise.deliver(static_cast<std::int64_t>(it->second.pid));
      return;
    } else {
      if (!it->second.ended) ended(it->second, how_it_ended(it->second.host.exitcode()));
      it->second.host.restart();  // same mailbox; named actors spawned again
    }
    Entry& entry = it->second;
    entry.handle = entry.host.process();
    entry.pid = entry.handle->pid();
    entry.ended.reset();
    promise.deliver(static_cast<std::int64_t>(entry.pid));
  } catch (const std::exception& e) {
    promise.deliver_error(mpx::detail::demangle(typeid(e).name()), e.what());
  }
}

void HostKeeper::wait_exit(const WaitRemoteHostExit& m, ResponsePromise<RemoteHostExit> promise) {
  Entry* entry = owned(m.owner, m.id, promise);
  if (!promise.pending()) return;
  if (!entry) {
    promise.deliver(RemoteHostExit{m.pid, std::nullopt, "host '" + m.id + "' is not kept by node '" + node_ + "'", {}});
  } else if (entry->pid != m.pid) {
    promise.deliver(RemoteHostExit{m.pid, std::nullopt, "replaced by pid " + std::to_string(entry->pid), {}});
  } else if (entry->ended) {
    promise.deliver(*entry->ended);
  } else {
    entry->waiters.push_back(std::move(promise));
  }
}

void HostKeeper::stop(const StopRemoteHost& m, ResponsePromise<RemoteHostExit> promise) {
  Entry* entry = owned(m.owner, m.id, promise);
  if (!promise.pending()) return;
  if (!entry) {
    promise.deliver(RemoteHostExit{0, std::nullopt, "not running", {}});
    return;
  }
  const std::string id = m.id;
  try {
    if (!entry->ended) {
      const auto timeout = std::chrono::milliseconds(m.timeout_ms);
      if (timeout.count() == 0) {
        entry->host.kill();
        entry->host.join();
      } else {
        entry->host.stop(timeout);
      }
      ended(*entry, "stopped by the supervisor");
    }
    promise.deliver(*entry->ended);
    if (m.release) {
      entry->host.shutdown(std::chrono::milliseconds(1000));  // retires the mailbox
      hosts_.erase(id);
      get_logger()->info("mpx nodes: {}: released host {} of supervisor {}", node_, id, m.owner);
    }
  } catch (const std::exception& e) {
    promise.deliver_error(mpx::detail::demangle(typeid(e).name()), e.what());
  }
}

void HostKeeper::shut_everything_down() {
  for (auto& [id, entry] : hosts_) {
    if (!entry.ended) {
      entry.host.shutdown(entry.handle->is_alive() ? std::chrono::milliseconds(5000) : std::chrono::milliseconds(0));
      ended(entry, "node '" + node_ + "' closed");
    }
  }
  hosts_.clear();
}

namespace {

std::mutex g_keeper_mutex;
std::weak_ptr<HostKeeper> g_keeper;  // of this process' Node

std::shared_ptr<HostKeeper> keeper() {
  std::lock_guard lock(g_keeper_mutex);
  return g_keeper.lock();
}

template <class R, class M>
ResponsePromise<R> hand_to_keeper(Context& self, const M& message,
                                  void (HostKeeper::*method)(const M&, ResponsePromise<R>)) {
  auto promise = self.make_response_promise<R>();
  auto k = keeper();
  if (!k || !k->post([k = k.get(), message, promise, method]() mutable { (k->*method)(message, std::move(promise)); }))
    promise.deliver_error("mpx::actors::NodeError", "this node is closing");
  return promise;
}

// The keeper's front: hands each request to the keeper thread (a start or a
// stop may take seconds; the node's actors must not wait for it).
Behavior host_keeper_actor(Context& self) {
  return {
      [&self](const StartRemoteHost& m) { return hand_to_keeper<std::int64_t>(self, m, &HostKeeper::start); },
      [&self](const WaitRemoteHostExit& m) { return hand_to_keeper<RemoteHostExit>(self, m, &HostKeeper::wait_exit); },
      [&self](const StopRemoteHost& m) { return hand_to_keeper<RemoteHostExit>(self, m, &HostKeeper::stop); },
  };
}

const bool g_keeper_registered = register_actor_function<&host_keeper_actor>("mpx.host_keeper");

}  // namespace

std::shared_ptr<HostKeeper> start_host_keeper(const std::string& node_name, std::chrono::milliseconds orphan_timeout,
                                              std::function<bool(const std::string&)> connected) {
  (void)g_keeper_registered;
  auto k = std::make_shared<HostKeeper>(node_name, orphan_timeout, std::move(connected));
  {
    std::lock_guard lock(g_keeper_mutex);
    g_keeper = k;
  }
  spawn_here("mpx.host_keeper", kHostKeeperName, encode_spawn_args());
  return k;
}

void stop_host_keeper(std::shared_ptr<HostKeeper> k) {
  if (!k) return;
  try {
    ActorRef(Endpoint::instance().name(), kHostKeeperName, 0, ::getpid()).kill();  // the name is free again
  } catch (const std::exception& e) {
    get_logger()->debug("mpx nodes: stopping the host keeper's actor: {}", e.what());
  }
  {
    std::lock_guard lock(g_keeper_mutex);
    g_keeper.reset();
  }
  k.reset();  // the last reference but a job's: the destructor shuts the kept hosts down
}

// ---- the supervisor side

RemoteHost::RemoteHost(std::string node, std::string id, std::string owner)
    : node_(std::move(node)), id_(std::move(id)), owner_(std::move(owner)),
      keeper_(node_, std::string(kNodeProcessHost), kHostKeeperName, 0, 0) {
  event_.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!event_) throw ActorError("mpx supervisor: eventfd failed");
}

RemoteHost::~RemoteHost() { finish_waiter(); }

void RemoteHost::finish_waiter() {
  cancel_.store(true);
  if (waiter_.joinable()) waiter_.join();
  cancel_.store(false);
  std::uint64_t n;
  [[maybe_unused]] auto r = ::read(event_.get(), &n, sizeof n);  // not readable until the next end
}

pid_t RemoteHost::start(const HostOptions& options, const std::vector<ActorSpec>& actors) {
  finish_waiter();
  const auto timeout = options.spawn_timeout + std::chrono::seconds(5);
  const auto pid = keeper_.request<std::int64_t>(StartRemoteHost{owner_, id_, options, actors}).get(timeout);
  {
    std::lock_guard lock(mutex_);
    pid_ = static_cast<pid_t>(pid);
    exit_.reset();
  }
  waiter_ = std::thread([this, p = pid_] { watch(p); });
  return pid_;
}

void RemoteHost::watch(pid_t pid) {
  RemoteHostExit exit;
  try {
    auto response = keeper_.request<RemoteHostExit>(WaitRemoteHostExit{owner_, id_, pid});
    // Cancelled by a new start or the destructor; a lost node fails it at once.
    while (!response.wait(std::chrono::milliseconds(200)))
      if (cancel_.load()) return;
    exit = response.get();
  } catch (const std::exception& e) {
    exit = RemoteHostExit{pid, std::nullopt, e.what(), {}};
    if (const auto* down = dynamic_cast<const ActorDown*>(&e)) exit.how = down->reason();
  }
  {
    std::lock_guard lock(mutex_);
    if (pid != pid_) return;
    exit_ = std::move(exit);
  }
  std::uint64_t one = 1;
  [[maybe_unused]] auto w = ::write(event_.get(), &one, sizeof one);
}

void RemoteHost::fail_start(std::string why) {
  std::lock_guard lock(mutex_);
  exit_ = RemoteHostExit{pid_, std::nullopt, std::move(why), {}};
}

std::optional<RemoteHostExit> RemoteHost::exit() const {
  std::lock_guard lock(mutex_);
  return exit_;
}

RemoteHostExit RemoteHost::stop(std::chrono::milliseconds timeout, bool release) {
  RemoteHostExit out{pid_, std::nullopt, "stopped by the supervisor", {}};
  const bool infinite = timeout == std::chrono::milliseconds::max();
  try {
    auto response = keeper_.request<RemoteHostExit>(
        StopRemoteHost{owner_, id_, infinite ? std::int64_t{24} * 3600 * 1000 : timeout.count(), release});
    // The host's own order: poison pills, the timeout, SIGTERM, 1 s, SIGKILL.
    out = infinite ? response.get() : response.get(timeout + std::chrono::seconds(5));
  } catch (const std::exception& e) {
    get_logger()->warn("mpx supervisor: stopping host {} on node {}: {}", id_, node_, e.what());
  }
  finish_waiter();
  std::lock_guard lock(mutex_);
  exit_ = out;
  return out;
}

}  // namespace mpx::actors::detail
