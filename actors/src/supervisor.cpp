// Supervisor (see mpx/actors/supervisor.hpp).
#include "mpx/actors/supervisor.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <random>
#include <thread>

#include <nlohmann/json.hpp>

#include "mpx/context.hpp"
#include "mpx/detail/unique_fd.hpp"
#include "mpx/forkserver.hpp"
#include "mpx/logging.hpp"
#include "mpx/actors/detail/status_segment.hpp"
#include "mpx/process.hpp"
#include "exception_slot.hpp"
#include "host_access.hpp"
#include "host_spec_wire.hpp"
#include "remote_host.hpp"
#include "runtime.hpp"

namespace mpx::actors {

using Clock = std::chrono::steady_clock;

std::string ExitReport::to_string() const {
  std::string code = exit_code ? std::to_string(*exit_code) : "unknown";
  std::string out = supervisor + "/" + child + " (pid " + std::to_string(pid) + ") " + how + ", exit code " + code;
  if (exception) out += ", uncaught " + exception->type + (exception->message.empty() ? "" : ": " + exception->message);
  return out + ", restarts " + std::to_string(restarts);
}

ChildSpec ChildSpec::process(std::string id, std::function<void()> target) {
  ChildSpec spec;
  spec.id = std::move(id);
  spec.kind = Kind::process;
  spec.target = std::move(target);
  return spec;
}

ChildSpec ChildSpec::host(std::string id, HostOptions options, std::vector<ActorSpec> actors) {
  ChildSpec spec;
  spec.id = std::move(id);
  spec.kind = Kind::host;
  spec.host_options = std::move(options);
  spec.actors = std::move(actors);
  return spec;
}

ChildSpec ChildSpec::supervisor(std::string id, SupervisorOptions options, std::vector<ChildSpec> children) {
  ChildSpec spec;
  spec.id = std::move(id);
  spec.kind = Kind::supervisor;
  spec.shutdown = std::chrono::milliseconds::max();  // infinity, as OTP's default for supervisors
  spec.supervisor_options = std::make_shared<const SupervisorOptions>(std::move(options));
  spec.children = std::move(children);
  return spec;
}

namespace {

using detail::ExceptionSlot;

// A forked child's target, recording an uncaught exception in `slot`.
std::function<void()> recording(std::function<void()> target, ExceptionSlot* slot) {
  return [target = std::move(target), slot] { detail::run_recording(*slot, target); };
}

// The options a host child is started with: the spec's limits, when it has
// any, and its start method, when set, replace those of its HostOptions.
HostOptions host_options(const ChildSpec& spec) {
  HostOptions options = spec.host_options;
  if (spec.limits != ProcessLimits{}) options.limits = spec.limits;
  if (spec.start_method) options.start_method = spec.start_method;
  return options;
}

// The body of a nested supervisor's process: runs the supervisor until it
// gives up (exit 1: its parent sees the escalation) or gets SIGTERM (exit 0).
// SIGTERM is blocked and waited for with sigtimedwait: no handler.
void run_nested(const std::string& name, const SupervisorOptions& options, const std::vector<ChildSpec>& children) {
  sigset_t term;
  sigemptyset(&term);
  sigaddset(&term, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &term, nullptr);
  Supervisor supervisor(name, options, children);
  const timespec tick{0, 20'000'000};
  for (;;) {
    if (sigtimedwait(&term, nullptr, &tick) == SIGTERM) {
      supervisor.stop();
      mpx::exit(0);
    }
    if (supervisor.failed()) {
      get_logger()->error("mpx supervisor {}: {}", name, supervisor.failure());
      mpx::exit(1);
    }
    if (supervisor.finished()) mpx::exit(0);  // auto_shutdown
  }
}

// Why `spec` (a nested supervisor's) cannot cross to a fork server's child
// or a new image, or empty when it can: closures and callbacks live only in
// this process' memory.
std::string cannot_cross(const ChildSpec& spec) {
  switch (spec.kind) {
    case ChildSpec::Kind::host: return "";
    case ChildSpec::Kind::process:
      return spec.encode_arguments ? "" : "its child " + spec.id + " is a closure (only a ChildSpec::process<Function> "
                                                                   "child can cross)";
    case ChildSpec::Kind::supervisor:
      if (spec.supervisor_options && spec.supervisor_options->on_exit)
        return "nested supervisor " + spec.id + " has an on_exit callback";
      for (const auto& child : spec.children)
        if (auto why = cannot_cross(child); !why.empty()) return why;
      return "";
  }
  return "unknown child kind";
}

}  // namespace

namespace detail {

namespace {
std::mutex g_starts_mutex;
std::map<std::string, SupervisedStartFactory>& supervised_starts() {
  static auto* starts = new std::map<std::string, SupervisedStartFactory>;  // never destroyed: used at exit
  return *starts;
}
}  // namespace

bool register_supervised_start(const char* name, SupervisedStartFactory factory) {
  std::lock_guard lock(g_starts_mutex);
  return supervised_starts().emplace(name, factory).second;
}

namespace {

SupervisedStartFactory find_supervised_start(const std::string& name) {
  std::lock_guard lock(g_starts_mutex);
  auto it = supervised_starts().find(name);
  if (it == supervised_starts().end())
    throw ActorError("mpx supervisor: no supervised function '" + name + "' in this program");
  return it->second;
}

// A nested supervisor's spec, as it crosses to a fork server's child or a
// new image (only specs cannot_cross accepts). Saved while the start encodes
// its arguments, so the primitives in function children's arguments add
// their descriptors to that start; loaded while those descriptors are at
// hand, so function children are decoded (made startable) at once.
// Durations travel as milliseconds, enums as integers.
struct NestedSpec {
  std::string id;
  std::shared_ptr<const SupervisorOptions> options;
  std::vector<ChildSpec> children;

  template <class A>
  void save(A& ar) const {
    save_options(ar, *options);
    ar(id, static_cast<std::uint64_t>(children.size()));
    for (const auto& child : children) save_child(ar, child);
  }
  template <class A>
  void load(A& ar) {
    auto loaded = std::make_shared<SupervisorOptions>();
    load_options(ar, *loaded);
    options = std::move(loaded);
    std::uint64_t n = 0;
    ar(id, n);
    children = load_children(ar, n);
  }

  template <class A>
  static void save_options(A& ar, const SupervisorOptions& o) {
    ar(static_cast<std::int32_t>(o.strategy), static_cast<std::int32_t>(o.auto_shutdown), o.intensity.restarts,
       static_cast<std::int64_t>(o.intensity.period.count()), static_cast<std::int64_t>(o.backoff.min.count()),
       static_cast<std::int64_t>(o.backoff.max.count()), o.backoff.jitter,
       static_cast<std::int64_t>(o.backoff.reset_after.count()), static_cast<std::uint64_t>(o.history));
  }
  template <class A>
  static void load_options(A& ar, SupervisorOptions& o) {
    std::int32_t strategy = 0, auto_shutdown = 0;
    std::int64_t period = 0, min = 0, max = 0, reset_after = 0;
    std::uint64_t history = 0;
    ar(strategy, auto_shutdown, o.intensity.restarts, period, min, max, o.backoff.jitter, reset_after, history);
    o.strategy = static_cast<Strategy>(strategy);
    o.auto_shutdown = static_cast<AutoShutdown>(auto_shutdown);
    o.intensity.period = std::chrono::milliseconds(period);
    o.backoff.min = std::chrono::milliseconds(min);
    o.backoff.max = std::chrono::milliseconds(max);
    o.backoff.reset_after = std::chrono::milliseconds(reset_after);
    o.history = static_cast<std::size_t>(history);
  }

  template <class A>
  static void save_child(A& ar, const ChildSpec& c) {
    ar(static_cast<std::int32_t>(c.kind), c.id, static_cast<std::int32_t>(c.restart),
       static_cast<std::int64_t>(c.shutdown.count()), c.significant, c.limits, start_method_code(c.start_method));
    switch (c.kind) {
      case ChildSpec::Kind::process:
        ar(c.function, c.encode_arguments());
        break;
      case ChildSpec::Kind::host:
        save_host_spec(ar, c.host_options, c.actors);
        ar(c.node);
        break;
      case ChildSpec::Kind::supervisor:
        NestedSpec{c.id, c.supervisor_options, c.children}.save(ar);
        break;
    }
  }

  template <class A>
  static std::vector<ChildSpec> load_children(A& ar, std::uint64_t n) {
    std::vector<ChildSpec> out;
    for (std::uint64_t i = 0; i < n; ++i) {
      ChildSpec c;
      std::int32_t kind = 0, restart = 0, method = -1;
      std::int64_t shutdown = 0;
      ar(kind, c.id, restart, shutdown, c.significant, c.limits, method);
      c.kind = static_cast<ChildSpec::Kind>(kind);
      c.restart = static_cast<RestartType>(restart);
      c.shutdown = std::chrono::milliseconds(shutdown);
      c.start_method = start_method_of(method);
      switch (c.kind) {
        case ChildSpec::Kind::process: {
          Bytes arguments;
          ar(c.function, arguments);
          c.start = find_supervised_start(c.function)(arguments);
          break;
        }
        case ChildSpec::Kind::host:
          load_host_spec(ar, c.host_options, c.actors);
          ar(c.node);
          break;
        case ChildSpec::Kind::supervisor: {
          NestedSpec nested;
          nested.load(ar);
          c.supervisor_options = std::move(nested.options);
          c.children = std::move(nested.children);
          break;
        }
        default:
          throw ActorError("mpx supervisor: a nested spec with an unknown child kind");
      }
      out.push_back(std::move(c));
    }
    return out;
  }
};

// The body of a nested supervisor started under forkserver or spawn (its
// process shares nothing with this one): takes the tree's root and node, so
// its hosts' mailboxes are those the tree's refs name, then runs it as a
// forked one runs.
void nested_main(NestedSpec spec, std::int32_t tree, std::string node, std::uint64_t node_max_message,
                 SharedMemory slot) {
  run_supervised(slot, [&] {
    set_tree_root(static_cast<pid_t>(tree));
    if (!node.empty() && local_node_name().empty())
      set_local_node(node, static_cast<std::size_t>(node_max_message));
    run_nested(spec.id, *spec.options, spec.children);
  });
}

}  // namespace
}  // namespace detail

void detail::run_supervised(const SharedMemory& slot, const std::function<void()>& body) {
  run_recording(exception_slot_in(slot), body);
}

}  // namespace mpx::actors

MPX_REGISTER_FUNCTION(mpx::actors::detail::nested_main);

namespace mpx::actors {

struct Supervisor::Impl {
  // How long after a restart the host's next standby is forked.
  static constexpr std::chrono::milliseconds kStandbyDelay{20};

  struct Child {
    ChildSpec spec;
    std::optional<Host> host;
    std::unique_ptr<detail::RemoteHost> remote;  // a host on another node
    std::optional<Process> process;
    std::optional<ProcessHandle> handle;
    enum class State { stopped, running, restarting } state = State::stopped;
    unsigned restarts = 0;
    unsigned failures_in_a_row = 0;
    Clock::time_point started_at{};
    Clock::time_point restart_at{};
    // A restarted host's next standby (HostOptions::standby) is forked then.
    std::optional<Clock::time_point> standby_at;
    std::optional<int> last_exit;
    // process and supervisor children: an ExceptionSlot the child shares
    // (inherited through fork, or a SharedMemory argument), made at its first
    // start, emptied before each
    SharedMemory exception_memory;
    ExceptionSlot* exception_slot = nullptr;  // in exception_memory
    bool removed = false;
    // The previous snapshot's reading of the host's message count, for rates.
    mutable std::uint64_t rate_count = 0;
    mutable Clock::time_point rate_at{};  // terminate_child: kept (indices stay valid), not shown

    // The current process' pid (on the other node for a remote host), 0 before the first start.
    [[nodiscard]] pid_t pid() const { return remote ? remote->pid() : handle ? handle->pid() : 0; }
    [[nodiscard]] std::optional<int> exit_code() const {
      if (remote) {
        auto e = remote->exit();
        return e ? e->exit_code : std::nullopt;
      }
      return handle ? handle->exitcode() : std::nullopt;
    }
  };

  static bool on_other_node(const ChildSpec& spec) {
    return !spec.node.empty() && spec.node != detail::local_node_name();
  }

  std::string name;
  SupervisorOptions options;
  std::vector<Child> children;
  mutable std::mutex mutex;
  mutable std::condition_variable changed;
  std::deque<ExitReport> history;
  std::deque<Clock::time_point> restart_times;
  bool failed = false;
  bool finished = false;
  bool stopped = false;
  std::optional<ChildSpec> template_spec;  // simple_one_for_one
  unsigned dynamic_count = 0;
  std::string failure;
  mpx::detail::UniqueFd wake;
  std::atomic<bool> stop_requested{false};
  std::thread watcher;
  std::mt19937 rng{std::random_device{}()};
  std::unique_ptr<detail::StatusWriter> status;  // what mpx-top reads

  SupervisorSnapshot snapshot_locked() const;
  void publish_status() {
    if (status && status->ok()) status->publish(snapshot_locked().to_json());
  }

  void start_child(Child& c) {
    if (!c.spec.node.empty() && c.spec.kind != ChildSpec::Kind::host)
      throw ActorError("mpx supervisor " + name + ": " + c.spec.id + ": only host children can run on another node");
    switch (c.spec.kind) {
      case ChildSpec::Kind::host:
        if (on_other_node(c.spec)) {
          if (detail::local_node_name().empty())
            throw ActorError("mpx supervisor " + name + ": host child " + c.spec.id + " runs on node '" + c.spec.node +
                             "': make this process tree's Node (and connect it) first");
          if (!c.remote)
            c.remote = std::make_unique<detail::RemoteHost>(c.spec.node, c.spec.id,
                                                            detail::local_node_name() + "/" + name);
          c.remote->start(host_options(c.spec), c.spec.actors);
          break;
        }
        if (!c.host) {
          c.host.emplace(c.spec.id, host_options(c.spec), c.spec.actors);
        } else {
          // Same mailbox; named actors spawned again. The next standby is
          // forked later (fork_due_standbys), not while the restarted host
          // answers its first messages.
          detail::HostAccess::restart_standby_later(*c.host);
          if (c.spec.host_options.standby) c.standby_at = Clock::now() + kStandbyDelay;
        }
        c.handle = c.host->process();
        break;
      case ChildSpec::Kind::process:
      case ChildSpec::Kind::supervisor: {
        auto process_options = ProcessOptions().with_name(c.spec.id).with_limits(c.spec.limits);
        c.exception_slot = detail::fresh_exception_slot(c.exception_memory);
        const bool forked = !c.spec.start_method || *c.spec.start_method == StartMethod::fork;
        if (c.spec.start) {
          // a plain function: any start method; the slot travels as an argument
          process_options.start_method = c.spec.start_method;
          c.process.emplace(c.spec.start(std::move(process_options), c.exception_memory));
        } else if (c.spec.kind == ChildSpec::Kind::supervisor && !forked) {
          // a nested supervisor under forkserver or spawn: its spec travels as an argument
          if (const std::string why = cannot_cross(c.spec); !why.empty())
            throw ActorError("mpx supervisor " + name + ": cannot start nested supervisor " + c.spec.id + " with the " +
                             std::string(mpx::to_string(*c.spec.start_method)) + " start method: " + why);
          process_options.start_method = c.spec.start_method;
          c.process.emplace(std::move(process_options), &detail::nested_main,
                            detail::NestedSpec{c.spec.id, c.spec.supervisor_options, c.spec.children},
                            static_cast<std::int32_t>(detail::tree_root()), detail::local_node_name(),
                            static_cast<std::uint64_t>(detail::local_node_max_message()), c.exception_memory);
        } else {
          if (!forked)
            throw ActorError("mpx supervisor " + name + ": " + c.spec.id +
                             ": closure children are forked; give another start method a "
                             "ChildSpec::process<Function> child");
          std::function<void()> target = c.spec.target;
          if (c.spec.kind == ChildSpec::Kind::supervisor) {
            target = [id = c.spec.id, options = c.spec.supervisor_options, specs = c.spec.children] {
              run_nested(id, *options, specs);
            };
          }
          c.process.emplace(std::move(process_options).with_start_method(StartMethod::fork),
                            recording(std::move(target), c.exception_slot));
        }
        c.process->start();
        c.handle = c.process->handle();
        break;
      }
    }
    c.state = Child::State::running;
    c.started_at = Clock::now();
    get_logger()->info("mpx supervisor {}: started {} (pid {}{})", name, c.spec.id, c.pid(),
                       c.remote ? " on node " + c.spec.node : std::string());
  }

  // Stops a running child in order; its exit is reported as stopped.
  void stop_child(Child& c) {
    if (c.state != Child::State::running || (!c.handle && !c.remote)) {
      c.state = Child::State::stopped;
      return;
    }
    const auto timeout = c.spec.shutdown;
    if (c.remote) {
      c.remote->stop(timeout, false);
      report(c, "stopped by the supervisor");
      c.state = Child::State::stopped;
      return;
    }
    auto& h = *c.handle;
    if (timeout.count() == 0) {
      h.kill();
      h.join();
    } else if (c.spec.kind == ChildSpec::Kind::host) {
      c.host->stop(timeout);
    } else {
      h.terminate();
      const bool infinite = timeout == std::chrono::milliseconds::max();
      if (infinite) {
        h.join();
      } else if (!h.join(timeout)) {
        get_logger()->warn("mpx supervisor {}: {} ignored SIGTERM for {} ms: killing it", name, c.spec.id,
                           timeout.count());
        h.kill();
        h.join();
      }
    }
    report(c, "stopped by the supervisor");
    c.state = Child::State::stopped;
  }

  void report(Child& c, std::string how) {
    ExitReport r;
    r.supervisor = name;
    r.child = c.spec.id;
    r.pid = c.pid();
    r.exit_code = c.exit_code();
    r.how = std::move(how);
    if (c.exception_slot) r.exception = c.exception_slot->read();
    if (c.host) r.exception = c.host->exception();
    if (c.remote)
      if (auto e = c.remote->exit()) r.exception = e->exception;
    r.restarts = c.restarts;
    r.when = std::chrono::system_clock::now();
    c.last_exit = r.exit_code;
    const bool normal = r.exit_code && *r.exit_code == 0;
    if (normal)
      get_logger()->info("mpx supervisor: {}", r.to_string());
    else
      get_logger()->warn("mpx supervisor: {}", r.to_string());
    history.push_back(r);
    while (history.size() > options.history) history.pop_front();
    if (options.on_exit) {
      try {
        options.on_exit(r);
      } catch (const std::exception& e) {
        get_logger()->error("mpx supervisor {}: on_exit threw: {}", name, e.what());
      }
    }
  }

  std::chrono::milliseconds backoff_delay(Child& c) {
    const auto& b = options.backoff;
    if (Clock::now() - c.started_at >= b.reset_after) c.failures_in_a_row = 0;
    const unsigned k = c.failures_in_a_row++;
    if (b.min.count() <= 0) return std::chrono::milliseconds(0);
    double delay = static_cast<double>(b.min.count()) * std::pow(2.0, std::min(k, 30u));
    if (b.max.count() > 0) delay = std::min(delay, static_cast<double>(b.max.count()));
    if (b.jitter > 0) delay *= std::uniform_real_distribution<double>(1.0 - b.jitter, 1.0 + b.jitter)(rng);
    return std::chrono::milliseconds(static_cast<long long>(delay));
  }

  void stop_all() {
    for (auto it = children.rbegin(); it != children.rend(); ++it)
      if (!it->removed) stop_child(*it);
  }

  void give_up(const std::string& why) {
    failure = why;
    get_logger()->error("mpx supervisor {}: {}: stopping every child", name, why);
    stop_all();
    failed = true;
    finished = true;
    publish_status();
    changed.notify_all();
  }

  void auto_shut_down(const std::string& why) {
    get_logger()->info("mpx supervisor {}: auto_shutdown: {}: stopping every child", name, why);
    stop_all();
    finished = true;
    publish_status();
    changed.notify_all();
  }

  // A child that will not be restarted has stopped: auto_shutdown rules.
  void check_auto_shutdown(const Child& c) {
    if (!c.spec.significant || options.auto_shutdown == AutoShutdown::never) return;
    if (options.auto_shutdown == AutoShutdown::any_significant) {
      auto_shut_down("significant child " + c.spec.id + " exited");
      return;
    }
    for (const auto& other : children)
      if (!other.removed && other.spec.significant && other.state != Child::State::stopped) return;
    auto_shut_down("every significant child exited");
  }

  void wake_watcher() {
    std::uint64_t one = 1;
    [[maybe_unused]] auto w = ::write(wake.get(), &one, sizeof one);
  }

  void on_exit(std::size_t index) {
    Child& c = children[index];
    c.state = Child::State::stopped;
    if (c.host) (void)c.host->is_alive();  // records the death in its mailbox: requests fail at once meanwhile
    const auto code = c.exit_code();
    if (c.remote) {
      auto e = c.remote->exit();
      report(c, e ? e->how : "ended");  // the keeper's word, or why the node was lost
    } else {
      report(c, detail::how_it_ended(code));
    }
    const bool abnormal = !code || *code != 0;
    const bool restart = c.spec.restart == RestartType::permanent ||
                         (c.spec.restart == RestartType::transient && abnormal);
    if (!restart) {
      check_auto_shutdown(c);
      return;
    }
    const auto now = Clock::now();
    restart_times.push_back(now);
    while (!restart_times.empty() && now - restart_times.front() > options.intensity.period) restart_times.pop_front();
    if (static_cast<int>(restart_times.size()) > options.intensity.restarts) {
      give_up("reached the maximum restart intensity (" + std::to_string(options.intensity.restarts) +
              " restarts in " + std::to_string(options.intensity.period.count()) + " ms)");
      return;
    }
    const auto at = now + backoff_delay(c);
    std::size_t first = index;
    if (options.strategy == Strategy::one_for_all) first = 0;
    const bool alone = options.strategy == Strategy::one_for_one || options.strategy == Strategy::simple_one_for_one;
    std::size_t last = alone ? index : children.size() - 1;
    // Siblings caught by the strategy stop in reverse order.
    for (std::size_t i = last + 1; i-- > first;)
      if (i != index && !children[i].removed) stop_child(children[i]);
    for (std::size_t i = first; i <= last; ++i) {
      Child& s = children[i];
      if (s.removed || (i != index && s.spec.restart == RestartType::temporary)) continue;
      s.state = Child::State::restarting;
      s.restart_at = at;
    }
  }

  void restart_due() {
    const auto now = Clock::now();
    for (std::size_t i = 0; i < children.size(); ++i) {
      Child& c = children[i];
      if (c.state != Child::State::restarting || c.restart_at > now) continue;
      ++c.restarts;
      try {
        start_child(c);
      } catch (const std::exception& e) {
        if (c.remote) {
          // Its node is out of reach (or refused): another exit, so that
          // intensity and backoff decide, not this one failure.
          get_logger()->warn("mpx supervisor {}: restarting {} on node {} failed: {}", name, c.spec.id, c.spec.node,
                             e.what());
          c.remote->fail_start(std::string("could not start: ") + e.what());
          c.state = Child::State::running;
          on_exit(i);
          if (finished) return;
          continue;
        }
        get_logger()->error("mpx supervisor {}: restarting {} failed: {}", name, c.spec.id, e.what());
        c.state = Child::State::stopped;
        give_up("could not restart " + c.spec.id + ": " + e.what());
        return;
      }
    }
  }

  void fork_due_standbys() {
    const auto now = Clock::now();
    for (auto& c : children) {
      if (!c.standby_at || *c.standby_at > now) continue;
      c.standby_at.reset();
      if (c.host && c.state == Child::State::running) detail::HostAccess::refresh_standby(*c.host);
    }
  }

  void watch() {
    while (!stop_requested.load()) {
      std::vector<pollfd> fds{{wake.get(), POLLIN, 0}};
      std::vector<std::size_t> who;
      int timeout_ms = 500;  // also the refresh period of the published status
      {
        std::lock_guard lock(mutex);
        if (finished || stopped) return;
        const auto now = Clock::now();
        auto wake_by = [&](Clock::time_point at) {
          auto left = std::chrono::duration_cast<std::chrono::milliseconds>(at - now).count();
          timeout_ms = std::min<int>(timeout_ms, static_cast<int>(std::max<long long>(0, left)));
        };
        for (std::size_t i = 0; i < children.size(); ++i) {
          auto& c = children[i];
          if (c.state == Child::State::running) {
            fds.push_back({c.remote ? c.remote->exit_fd() : c.handle->sentinel(), POLLIN, 0});
            who.push_back(i);
          } else if (c.state == Child::State::restarting) {
            wake_by(c.restart_at);
          }
          if (c.standby_at) wake_by(*c.standby_at);
        }
      }
      ::poll(fds.data(), fds.size(), timeout_ms);
      if (stop_requested.load()) return;
      std::lock_guard lock(mutex);
      if (stopped) return;
      if (fds[0].revents & POLLIN) {
        std::uint64_t n;
        [[maybe_unused]] auto r = ::read(wake.get(), &n, sizeof n);
      }
      for (std::size_t k = 0; k < who.size(); ++k) {
        auto& c = children[who[k]];
        if (c.state == Child::State::running && (fds[k + 1].revents & (POLLIN | POLLHUP)) &&
            (c.remote ? c.remote->exit().has_value() : !c.handle->is_alive())) {
          on_exit(who[k]);
          if (finished) return;
        }
      }
      restart_due();
      fork_due_standbys();
      publish_status();
      changed.notify_all();
    }
  }
};

Supervisor::Supervisor(std::string name, SupervisorOptions options, std::vector<ChildSpec> children)
    : impl_(std::make_unique<Impl>()) {
  detail::check_name(name, "supervisor name");
  impl_->name = std::move(name);
  impl_->options = std::move(options);
  impl_->wake.reset(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!impl_->wake) throw ActorError("mpx supervisor: eventfd failed");
  if (impl_->options.strategy == Strategy::simple_one_for_one) {
    if (children.size() != 1)
      throw ActorError("mpx supervisor " + impl_->name + ": simple_one_for_one takes exactly one child spec (the template)");
    impl_->template_spec = std::move(children.front());
    children.clear();
  }
  for (auto& spec : children) {
    Impl::Child c;
    c.spec = std::move(spec);
    impl_->children.push_back(std::move(c));
  }
  std::string starting;
  try {
    for (auto& c : impl_->children) {
      starting = c.spec.id;
      impl_->start_child(c);
    }
  } catch (...) {
    for (auto it = impl_->children.rbegin(); it != impl_->children.rend(); ++it) impl_->stop_child(*it);
    try {
      throw;
    } catch (const ActorError&) {
      throw;
    } catch (const mpx::Error& e) {  // a ProcessError (bad limits, a failed fork): the contract says ActorError
      throw ActorError("mpx supervisor " + impl_->name + ": cannot start " + starting + ": " + e.what());
    }
  }
  impl_->status = std::make_unique<detail::StatusWriter>(impl_->name);
  impl_->publish_status();
  impl_->watcher = std::thread([impl = impl_.get()] { impl->watch(); });
}

Supervisor::~Supervisor() {
  try {
    stop();
  } catch (const std::exception& e) {
    get_logger()->error("mpx supervisor {}: stop failed: {}", impl_->name, e.what());
  }
}

void Supervisor::stop() {
  {
    // Stop the children while the watcher thread still lives: it forked the
    // restarted ones, whose parent-death signal fires when that thread ends.
    std::lock_guard lock(impl_->mutex);
    if (!impl_->stopped) {
      impl_->stopped = true;  // the watcher restarts nothing from now on
      impl_->stop_all();
      for (auto& c : impl_->children) {
        if (c.host) c.host->shutdown(std::chrono::milliseconds(1000));  // retires the mailboxes
        if (c.remote) c.remote->stop(std::chrono::milliseconds(1000), true);  // there too
      }
      impl_->changed.notify_all();
    }
  }
  impl_->stop_requested.store(true);
  std::uint64_t one = 1;
  [[maybe_unused]] auto w = ::write(impl_->wake.get(), &one, sizeof one);
  if (impl_->watcher.joinable()) impl_->watcher.join();
  std::lock_guard lock(impl_->mutex);
  impl_->status.reset();  // unlinks the status segment: mpx-top sees the tree gone
}

std::string Supervisor::start_child(ChildSpec spec) {
  std::lock_guard lock(impl_->mutex);
  if (impl_->stopped || impl_->finished) throw ActorError("mpx supervisor " + impl_->name + ": not running");
  for (const auto& c : impl_->children)
    if (!c.removed && c.spec.id == spec.id)
      throw ActorError("mpx supervisor " + impl_->name + ": a child '" + spec.id + "' exists");
  Impl::Child c;
  c.spec = std::move(spec);
  impl_->children.push_back(std::move(c));
  try {
    impl_->start_child(impl_->children.back());
  } catch (...) {
    impl_->children.back().removed = true;
    throw;
  }
  impl_->wake_watcher();
  return impl_->children.back().spec.id;
}

std::string Supervisor::start_child() {
  ChildSpec spec;
  {
    std::lock_guard lock(impl_->mutex);
    if (!impl_->template_spec)
      throw ActorError("mpx supervisor " + impl_->name + ": start_child() needs the simple_one_for_one strategy");
    spec = *impl_->template_spec;
    spec.id += "-" + std::to_string(++impl_->dynamic_count);
  }
  return start_child(std::move(spec));
}

void Supervisor::terminate_child(const std::string& id) {
  std::lock_guard lock(impl_->mutex);
  for (auto& c : impl_->children)
    if (!c.removed && c.spec.id == id) {
      impl_->stop_child(c);
      if (c.host) c.host->shutdown(std::chrono::milliseconds(1000));
      if (c.remote) c.remote->stop(std::chrono::milliseconds(1000), true);
      c.removed = true;
      impl_->wake_watcher();
      return;
    }
  throw ActorError("mpx supervisor " + impl_->name + ": no child '" + id + "'");
}

bool Supervisor::finished() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->finished;
}

bool Supervisor::failed() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->failed;
}

std::string Supervisor::failure() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->failure;
}

bool Supervisor::wait_failed(std::chrono::milliseconds timeout) const {
  std::unique_lock lock(impl_->mutex);
  return impl_->changed.wait_for(lock, timeout, [&] { return impl_->failed; });
}

const std::string& Supervisor::name() const { return impl_->name; }

std::vector<ChildInfo> Supervisor::which_children() const {
  std::lock_guard lock(impl_->mutex);
  std::vector<ChildInfo> out;
  for (const auto& c : impl_->children) {
    if (c.removed) continue;
    ChildInfo info;
    info.id = c.spec.id;
    info.kind = c.spec.kind;
    info.restarts = c.restarts;
    info.last_exit = c.last_exit;
    switch (c.state) {
      case Impl::Child::State::running:
        info.state = "running";
        info.pid = c.pid();
        break;
      case Impl::Child::State::restarting: info.state = "restarting"; break;
      case Impl::Child::State::stopped: info.state = "stopped"; break;
    }
    out.push_back(std::move(info));
  }
  return out;
}

ChildCounts Supervisor::count_children() const {
  ChildCounts counts;
  for (const auto& info : which_children()) {
    ++counts.specs;
    if (info.state == "running") ++counts.active;
    if (info.kind == ChildSpec::Kind::supervisor)
      ++counts.supervisors;
    else
      ++counts.workers;
  }
  return counts;
}

std::vector<ExitReport> Supervisor::reports() const {
  std::lock_guard lock(impl_->mutex);
  return {impl_->history.begin(), impl_->history.end()};
}

Host Supervisor::host(const std::string& id) const {
  std::lock_guard lock(impl_->mutex);
  for (const auto& c : impl_->children) {
    if (c.removed || c.spec.id != id) continue;
    if (c.host) return *c.host;
    if (Impl::on_other_node(c.spec))
      throw ActorError("mpx supervisor " + impl_->name + ": host child '" + id + "' runs on node '" + c.spec.node +
                       "': use actor(id, name)");
  }
  throw ActorError("mpx supervisor " + impl_->name + ": no host child '" + id + "'");
}

ActorRef Supervisor::actor(const std::string& id, const std::string& name) const {
  std::lock_guard lock(impl_->mutex);
  for (const auto& c : impl_->children)
    if (!c.removed && c.spec.id == id && c.spec.kind == ChildSpec::Kind::host)
      return Impl::on_other_node(c.spec) ? ActorRef(c.spec.node, id, name, 0, 0) : ActorRef(id, name, 0, 0);
  throw ActorError("mpx supervisor " + impl_->name + ": no host child '" + id + "'");
}

}  // namespace mpx::actors

namespace mpx::actors {

namespace {
const char* kind_name(ChildSpec::Kind kind) {
  switch (kind) {
    case ChildSpec::Kind::process: return "process";
    case ChildSpec::Kind::host: return "host";
    case ChildSpec::Kind::supervisor: return "supervisor";
  }
  return "unknown";
}
const char* strategy_name(Strategy strategy) {
  switch (strategy) {
    case Strategy::one_for_one: return "one_for_one";
    case Strategy::one_for_all: return "one_for_all";
    case Strategy::rest_for_one: return "rest_for_one";
    case Strategy::simple_one_for_one: return "simple_one_for_one";
  }
  return "unknown";
}

// A child snapshot from the JSON to_json() writes (a nested supervisor's
// published status); fields it lacks keep their defaults.
ChildSnapshot child_from_json(const nlohmann::json& j) {
  ChildSnapshot c;
  c.id = j.value("id", std::string());
  c.kind = j.value("kind", std::string());
  c.state = j.value("state", std::string());
  c.pid = j.value("pid", pid_t{0});
  c.node = j.value("node", std::string());
  c.restarts = j.value("restarts", 0u);
  c.uptime_s = j.value("uptime_s", 0.0);
  if (j.contains("last_exit") && j["last_exit"].is_number_integer()) c.last_exit = j["last_exit"].get<int>();
  if (j.contains("mailbox_depth")) c.mailbox_depth = j["mailbox_depth"].get<std::size_t>();
  if (j.contains("in_flight")) c.in_flight = j["in_flight"].get<std::uint64_t>();
  if (j.contains("dropped")) c.dropped = j["dropped"].get<std::uint64_t>();
  if (j.contains("messages_per_s")) c.messages_per_s = j["messages_per_s"].get<double>();
  if (j.contains("children"))
    for (const auto& grandchild : j["children"]) c.children.push_back(child_from_json(grandchild));
  return c;
}

// The children of the nested supervisor `id` running as process `pid`, as it
// published them; empty when it has not (yet), or when the segment of that
// name belongs to another tree (a supervisor of the same name elsewhere).
std::vector<ChildSnapshot> nested_children(const std::string& id, pid_t pid) {
  std::vector<ChildSnapshot> out;
  const auto text = detail::read_status(id);
  if (!text) return out;
  try {
    const auto tree = nlohmann::json::parse(*text);
    if (tree.value("pid", pid_t{0}) != pid) return out;
    for (const auto& child : tree.at("children")) out.push_back(child_from_json(child));
  } catch (const nlohmann::json::exception&) {
    out.clear();  // cut at the capacity, or not ours: show none rather than a part
  }
  return out;
}

nlohmann::json child_to_json(const ChildSnapshot& c) {
  nlohmann::json child{{"id", c.id}, {"kind", c.kind}, {"state", c.state}, {"pid", c.pid},
                       {"restarts", c.restarts}, {"uptime_s", c.uptime_s}};
  child["last_exit"] = c.last_exit ? nlohmann::json(*c.last_exit) : nlohmann::json(nullptr);
  if (!c.node.empty()) child["node"] = c.node;
  if (c.mailbox_depth) child["mailbox_depth"] = *c.mailbox_depth;
  if (c.in_flight) child["in_flight"] = *c.in_flight;
  if (c.dropped) child["dropped"] = *c.dropped;
  if (c.messages_per_s) child["messages_per_s"] = *c.messages_per_s;
  if (c.kind == "supervisor") {
    child["children"] = nlohmann::json::array();
    for (const auto& grandchild : c.children) child["children"].push_back(child_to_json(grandchild));
  }
  return child;
}

}  // namespace

SupervisorSnapshot Supervisor::snapshot() const {
  std::lock_guard lock(impl_->mutex);
  return impl_->snapshot_locked();
}

SupervisorSnapshot Supervisor::Impl::snapshot_locked() const {
  SupervisorSnapshot snap;
  snap.name = name;
  snap.pid = ::getpid();
  snap.strategy = strategy_name(options.strategy);
  snap.failed = failed;
  snap.failure = failure;
  const auto now = Clock::now();
  for (const auto& c : children) {
    if (c.removed) continue;
    ChildSnapshot child;
    child.id = c.spec.id;
    child.kind = kind_name(c.spec.kind);
    child.restarts = c.restarts;
    child.last_exit = c.last_exit;
    if (c.remote) child.node = c.spec.node;
    switch (c.state) {
      case Child::State::running:
        child.state = "running";
        child.pid = c.pid();
        child.uptime_s = std::chrono::duration<double>(now - c.started_at).count();
        if (c.spec.kind == ChildSpec::Kind::supervisor) child.children = nested_children(c.spec.id, child.pid);
        break;
      case Child::State::restarting: child.state = "restarting"; break;
      case Child::State::stopped: child.state = "stopped"; break;
    }
    if (c.host) {
      child.mailbox_depth = c.host->mailbox_depth();
      child.in_flight = c.host->in_flight();
      child.dropped = c.host->dropped();
      const std::uint64_t taken = c.host->messages_taken();
      if (c.rate_at != Clock::time_point{}) {
        const double dt = std::chrono::duration<double>(now - c.rate_at).count();
        if (dt > 0) child.messages_per_s = static_cast<double>(taken - c.rate_count) / dt;
      }
      c.rate_count = taken;
      c.rate_at = now;
    }
    snap.children.push_back(std::move(child));
  }
  return snap;
}

std::string SupervisorSnapshot::to_json(int indent) const {
  nlohmann::json tree;
  tree["name"] = name;
  tree["pid"] = pid;
  tree["strategy"] = strategy;
  tree["failed"] = failed;
  if (failed) tree["failure"] = failure;
  tree["children"] = nlohmann::json::array();
  for (const auto& c : children) tree["children"].push_back(child_to_json(c));
  return tree.dump(indent);
}

}  // namespace mpx::actors
