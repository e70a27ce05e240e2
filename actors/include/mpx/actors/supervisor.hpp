// mpx/actors/supervisor.hpp: restarting children that die, as Erlang/OTP's
// supervisor does: worker processes, actor hosts and nested supervisors.
//
//     using namespace mpx::actors;
//     Supervisor sup("service", SupervisorOptions().with_strategy(Strategy::one_for_one),
//                    {ChildSpec::host("worker-1", HostOptions(), {ActorSpec::make("adder", "adder-1")}),
//                     ChildSpec::process("cleaner", [] { clean_forever(); }),   // forked
//                     ChildSpec::process<index_shard>("shard-3", 3, jobs)        // any start method
//                         .with_start_method(mpx::StartMethod::forkserver)});
//     sup.host("worker-1").actor("adder-1").request<int>(Add{1, 2}).get(1s);
//     sup.stop();                                   // reverse order; also the destructor
//
// Contract
// - The constructor starts the children in spec order (throws ActorError and
//   stops what it started if one cannot start) and a watcher thread in this
//   process that waits on the children's pidfds. stop() stops them in
//   reverse order and is idempotent; the destructor calls it. Queries
//   (which_children, count_children, reports, failed) may be called from any
//   thread at any time.
// - A child exits: an ExitReport is made (to the log at info, or warn for
//   an abnormal exit; to SupervisorOptions::on_exit on the watcher thread;
//   to the bounded history). A process or nested supervisor child whose
//   target ended with an uncaught exception, or a host child whose main let
//   one escape (Host::exception), has it in the report (type and what(),
//   bounded), written by the child to memory shared with the supervisor
//   before it exits. permanent children are restarted, transient
//   ones only after an abnormal exit (exit code != 0), temporary never.
//   Strategies: one_for_one restarts the child; one_for_all stops the others
//   (reverse order) and restarts all in order; rest_for_one does so for the
//   children after it; simple_one_for_one makes children from a template
//   with start_child() and restarts them one for one.
// - auto_shutdown (OTP 24): when significant children exit for good, the
//   supervisor stops the others and finishes (finished() true, failed()
//   false; a nested one exits 0).
// - Intensity: more than `restarts` restarts within `period` (OTP's default:
//   1 in 5 s) make the supervisor give up: it stops every child, failed()
//   becomes true with the reason, and (nested) its process exits with 1, which
//   its own supervisor sees as the child's abnormal exit: escalation.
// - Backoff (what OTP lacks): a restart waits min * 2^k (k = failures in a
//   row), at most max, +-jitter; k resets once the child ran `reset_after`.
//   The default is no delay. Intensity is counted apart from the delay.
// - Stopping a child: a host gets poison pills, then its shutdown timeout,
//   SIGTERM, 1 s, SIGKILL, and keeps its mailbox, so a restarted host
//   handles what was sent meanwhile; a process gets SIGTERM, its timeout,
//   then SIGKILL; brutal_kill (timeout 0) is SIGKILL at once.
// - snapshot() is the live tree. A nested supervisor child runs in its own
//   process and publishes its snapshot (mpx/actors/detail/status_segment.hpp:
//   at every change and every 0.5 s); the parent's snapshot reads it (only
//   if it was published by that child's pid) and shows the nested children
//   under it, to any depth: a change deep in the tree reaches the root's
//   view within about 0.5 s per level below the first.
// - Start methods: host children follow HostOptions (ChildSpec::start_method,
//   when set, replaces its start_method). A process child made
//   from a closure (ChildSpec::process(id, closure)) is forked (asking for
//   another start method makes its start throw ActorError). A nested
//   supervisor is forked unless its spec's start_method is forkserver or
//   spawn: then its spec travels to the new process (every child a host, a
//   function child or a nested supervisor of the same kind, and no on_exit,
//   at any depth; else its start throws ActorError), with the tree's root and
//   node, and its children without a start method take that process'
//   default: the start method it was started with. A
//   process child made from a plain function and serializable arguments
//   (ChildSpec::process<worker>(id, args...)) starts with the spec's
//   start_method (empty: get_start_method() at each start): fork,
//   forkserver (a multi-threaded program supervising plain workers) or
//   spawn; its arguments, the framework's primitives included, are copied
//   into each start as for Process, and its exception slot travels as a
//   SharedMemory argument: restarts, shutdown, limits and reports
//   (ExitReport::exception included) are the same under every start method.
// - Hosts on other nodes: ChildSpec::host(...).with_node(peer) runs the host
//   on node `peer`, which this process tree's Node (node.hpp) has connected
//   to (make the Node first). The node there starts it as a child of its
//   own process (its host keeper: one thread that forks and reaps them) and
//   tells this supervisor when it ends, with the exit code or signal and an
//   escaped exception as for a local host; restarts keep its mailbox there,
//   so messages sent meanwhile wait, and strategies, intensity, backoff and
//   reports work as for local children. A lost node ends the child with an
//   unknown exit code and how "node down: ..."; a restart that cannot reach
//   the node counts as another exit (intensity and backoff apply) instead of
//   giving up at once. If the link comes back while the host still runs
//   there, the restart takes it back (same pid) without stopping it. A host
//   whose supervisor's node is gone keeps running until that supervisor
//   comes back or the node's Node is destroyed (which shuts down the hosts it
//   keeps). ChildInfo/ChildSnapshot pids of such a child are on that node;
//   mailbox figures are not shown. Supervisor::actor(id, name) names its
//   actors (Supervisor::host throws for it). Only host children can run on
//   another node.
// - Limits: ChildSpec::limits (ProcessLimits) are applied at every start and
//   restart of a child of any kind: process, nested supervisor (whose own
//   children inherit the rlimits, nice value and affinity: fork and spawn
//   keep them) and host (through HostOptions::limits, which the spec's limits replace when
//   it has any). Invalid ones (a nice value outside [-20, 19]) make the
//   constructor throw ActorError.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <vector>

#include "mpx/actors/detail/spawn_args.hpp"
#include "mpx/actors/host.hpp"
#include "mpx/process.hpp"
#include "mpx/shared_memory.hpp"

namespace mpx::actors {

namespace detail {

// In a supervised child: runs `body`, leaving an exception that escapes it
// in the exception slot `slot` (memory shared with the supervisor) before it
// reaches the process bootstrap (which logs it and exits 1).
void run_supervised(const SharedMemory& slot, const std::function<void()>& body);

// The registered body of a ChildSpec::process<Function> child: one per
// function, registered during static initialisation (so a fork server or a
// spawned child knows it) under its type's name; the exception slot comes
// last, as a SharedMemory argument.
//
// Each also registers, under the same name, how to make its start from its
// encoded arguments: a nested supervisor started under forkserver or spawn
// receives its function children that way (decoded while the descriptors of
// the arguments' primitives are at hand).
using SupervisedStart = std::function<Process(ProcessOptions, SharedMemory)>;
using SupervisedStartFactory = SupervisedStart (*)(std::span<const std::byte> arguments);
bool register_supervised_start(const char* name, SupervisedStartFactory factory);

template <auto Function, class Arguments>
struct SupervisedFunction;
template <auto Function, class... P>
struct SupervisedFunction<Function, std::tuple<P...>> {
  using Arguments = std::tuple<P...>;
  static void main(P... args, SharedMemory slot) {
    run_supervised(slot, [&] { Function(args...); });
  }
  static SupervisedStart start_from(std::shared_ptr<const Arguments> arguments) {
    return [arguments = std::move(arguments)](ProcessOptions options, SharedMemory slot) {
      return std::apply(
          [&](const auto&... values) { return Process(std::move(options), &main, values..., std::move(slot)); },
          *arguments);
    };
  }
  static SupervisedStart decode_start(std::span<const std::byte> bytes) {
    return start_from(std::make_shared<const Arguments>(mpx::decode<Arguments>(bytes)));
  }
  static inline const bool registered =
      mpx::detail::register_function(std::string(mpx::type_name<SupervisedFunction>()).c_str(),
                                     reinterpret_cast<void (*)()>(&main), &mpx::detail::invoke_remote<&main>) &&
      register_supervised_start(std::string(mpx::type_name<SupervisedFunction>()).c_str(), &decode_start);
};

}  // namespace detail

enum class RestartType { permanent, transient, temporary };
// simple_one_for_one: the one spec given is a template; children are made
// from it by start_child() (ids "<template id>-1", "-2", ...) and restarted
// one for one.
enum class Strategy { one_for_one, one_for_all, rest_for_one, simple_one_for_one };
// OTP 24's auto_shutdown: what the exit of a `significant` child (transient
// or temporary) that is not restarted does to the supervisor.
enum class AutoShutdown { never, any_significant, all_significant };

// ActorSpec (an actor a host child runs, spawned again at each restart of
// the host) is in host.hpp.

struct SupervisorOptions;
struct ChildSpec;

struct Intensity {
  int restarts = 1;
  std::chrono::milliseconds period{5000};
};

struct Backoff {
  std::chrono::milliseconds min{0};  // 0: restart at once
  std::chrono::milliseconds max{0};
  double jitter = 0.0;  // fraction: 0.2 = +-20 %
  std::chrono::milliseconds reset_after{10000};
};

// ChildException (the uncaught exception a child ended with) is in host.hpp.

struct ExitReport {
  std::string supervisor;
  std::string child;
  pid_t pid = 0;
  std::optional<int> exit_code;  // -N: signal N
  std::string how;               // "exited", "killed by signal", "stopped by the supervisor"
  // Process and nested supervisor children whose target threw, host children
  // whose main let an exception escape (exit code 1, unless a signal ended
  // the child while it was shutting down); empty otherwise.
  std::optional<ChildException> exception;
  unsigned restarts = 0;         // of this child before this exit
  std::chrono::system_clock::time_point when;
  [[nodiscard]] std::string to_string() const;
};

struct SupervisorOptions {
  Strategy strategy = Strategy::one_for_one;
  AutoShutdown auto_shutdown = AutoShutdown::never;
  Intensity intensity;
  Backoff backoff;
  std::function<void(const ExitReport&)> on_exit;  // runs on the watcher thread: keep it short
  std::size_t history = 256;

  SupervisorOptions& with_strategy(Strategy value) & {
    strategy = value;
    return *this;
  }
  SupervisorOptions&& with_strategy(Strategy value) && { return std::move(with_strategy(value)); }
  SupervisorOptions& with_auto_shutdown(AutoShutdown value) & {
    auto_shutdown = value;
    return *this;
  }
  SupervisorOptions&& with_auto_shutdown(AutoShutdown value) && { return std::move(with_auto_shutdown(value)); }
  SupervisorOptions& with_intensity(int restarts, std::chrono::milliseconds period) & {
    intensity = {restarts, period};
    return *this;
  }
  SupervisorOptions&& with_intensity(int restarts, std::chrono::milliseconds period) && {
    return std::move(with_intensity(restarts, period));
  }
  SupervisorOptions& with_backoff(Backoff value) & {
    backoff = value;
    return *this;
  }
  SupervisorOptions&& with_backoff(Backoff value) && { return std::move(with_backoff(value)); }
  SupervisorOptions& with_on_exit(std::function<void(const ExitReport&)> value) & {
    on_exit = std::move(value);
    return *this;
  }
  SupervisorOptions&& with_on_exit(std::function<void(const ExitReport&)> value) && {
    return std::move(with_on_exit(std::move(value)));
  }
};

struct ChildSpec {
  enum class Kind { process, host, supervisor };
  std::string id;
  Kind kind = Kind::process;
  RestartType restart = RestartType::permanent;
  std::chrono::milliseconds shutdown{5000};  // 0: brutal_kill; milliseconds::max(): infinity
  bool significant = false;                  // see AutoShutdown
  // applied at every (re)start (ProcessLimits in mpx/process.hpp; a CPU limit
  // ends the child with -SIGXCPU, an address space limit makes allocations
  // throw std::bad_alloc); for a host child, when any is set, they replace
  // its HostOptions::limits
  ProcessLimits limits;
  // process: a closure (forked), or a plain function with its arguments
  // (`start` makes the child's Process from its options and exception slot)
  std::function<void()> target;
  std::function<Process(ProcessOptions, SharedMemory)> start;
  // a plain function child, as it crosses to a nested supervisor started
  // under forkserver or spawn: its body's registered name, and its arguments
  // encoded (called while the nested supervisor's start encodes its spec)
  std::string function;
  std::function<Bytes()> encode_arguments;
  // empty: get_start_method() at each (re)start of a process child, the
  // HostOptions' for a host child (which it replaces when set), fork for a
  // nested supervisor (forkserver and spawn: see the contract). A closure
  // child takes fork only (others: ActorError).
  std::optional<StartMethod> start_method;
  // host
  HostOptions host_options;
  std::vector<ActorSpec> actors;
  // a host on another node (with_node): that node's name; empty (or this
  // tree's node): a host child of this process
  std::string node;
  // supervisor
  std::shared_ptr<const SupervisorOptions> supervisor_options;
  std::vector<ChildSpec> children;

  static ChildSpec process(std::string id, std::function<void()> target);
  // A child running Function(args...) (a plain function; its arguments
  // serializable, copied now and sent at each start) under the spec's start
  // method. Function need not be registered: the supervisor registers a
  // wrapper for it under the wrapper's type name (two functions of the same
  // name and signature in anonymous namespaces of two files of one program
  // collide: the second is logged at registration and its start fails
  // under forkserver or spawn).
  template <auto Function, class... Args>
  static ChildSpec process(std::string id, Args&&... args);
  static ChildSpec host(std::string id, HostOptions options, std::vector<ActorSpec> actors);
  static ChildSpec supervisor(std::string id, SupervisorOptions options, std::vector<ChildSpec> children);

  ChildSpec& with_restart(RestartType value) & {
    restart = value;
    return *this;
  }
  ChildSpec&& with_restart(RestartType value) && { return std::move(with_restart(value)); }
  ChildSpec& with_significant(bool value = true) & {
    significant = value;
    return *this;
  }
  ChildSpec&& with_significant(bool value = true) && { return std::move(with_significant(value)); }
  ChildSpec& with_shutdown(std::chrono::milliseconds value) & {
    shutdown = value;
    return *this;
  }
  ChildSpec&& with_shutdown(std::chrono::milliseconds value) && { return std::move(with_shutdown(value)); }
  ChildSpec& with_limits(ProcessLimits value) & {
    limits = std::move(value);
    return *this;
  }
  ChildSpec&& with_limits(ProcessLimits value) && { return std::move(with_limits(std::move(value))); }
  ChildSpec& with_start_method(StartMethod value) & {
    start_method = value;
    return *this;
  }
  ChildSpec&& with_start_method(StartMethod value) && { return std::move(with_start_method(value)); }
  // A host child only: run it on node `peer` (connected through this tree's
  // Node; see the contract).
  ChildSpec& with_node(std::string peer) & {
    node = std::move(peer);
    return *this;
  }
  ChildSpec&& with_node(std::string peer) && { return std::move(with_node(std::move(peer))); }
};

template <auto Function, class... Args>
ChildSpec ChildSpec::process(std::string id, Args&&... args) {
  using Fn = decltype(Function);
  static_assert(std::is_pointer_v<Fn> && std::is_function_v<std::remove_pointer_t<Fn>>,
                "ChildSpec::process<Function>: Function must be a plain function");
  using Arguments = typename mpx::detail::FunctionTraits<Fn>::Arguments;
  static_assert(mpx::detail::all_serializable<Arguments>(),
                "ChildSpec::process<Function>: its parameters must be serializable");
  using Body = detail::SupervisedFunction<Function, Arguments>;
  (void)Body::registered;  // instantiates (so performs) the registration
  ChildSpec spec;
  spec.id = std::move(id);
  spec.kind = Kind::process;
  auto arguments = std::make_shared<const Arguments>(std::forward<Args>(args)...);
  spec.start = Body::start_from(arguments);
  spec.function = std::string(mpx::type_name<Body>());
  spec.encode_arguments = [arguments] { return mpx::encode(*arguments); };
  return spec;
}

struct ChildInfo {
  std::string id;
  ChildSpec::Kind kind;
  pid_t pid = 0;          // 0 when not running
  std::string state;      // "running", "restarting", "stopped"
  unsigned restarts = 0;
  std::optional<int> last_exit;
};

// The live state of one child, for a status endpoint (Supervisor::snapshot).
struct ChildSnapshot {
  std::string id;
  std::string kind;   // "process", "host", "supervisor"
  std::string state;  // "running", "restarting", "stopped"
  pid_t pid = 0;      // on `node` when that is set
  std::string node;   // a host on another node: its name; empty: this machine
  unsigned restarts = 0;
  double uptime_s = 0;  // since the current process started; 0 when not running
  std::optional<int> last_exit;
  // hosts of this node only: messages waiting, taken and not yet handled, dropped
  std::optional<std::size_t> mailbox_depth;
  std::optional<std::uint64_t> in_flight;
  std::optional<std::uint64_t> dropped;
  std::optional<double> messages_per_s;  // taken by the host since the previous snapshot (the 0.5 s published ones count)
  // supervisors only: the nested supervisor's own children, to any depth, as
  // it last published them (status segment, see the contract); empty while it
  // is not running or has not published yet.
  std::vector<ChildSnapshot> children;
};

struct SupervisorSnapshot {
  std::string name;
  pid_t pid = 0;  // the process the supervisor runs in
  std::string strategy;
  bool failed = false;
  std::string failure;
  std::vector<ChildSnapshot> children;
  // {"name": ..., "pid": ..., "strategy": ..., "failed": ..., "children": [{...}, ...]}; a
  // supervisor child has its own "children" array.
  [[nodiscard]] std::string to_json(int indent = -1) const;
};

struct ChildCounts {
  std::size_t specs = 0, active = 0, supervisors = 0, workers = 0;
};

class Supervisor {
 public:
  Supervisor(std::string name, SupervisorOptions options, std::vector<ChildSpec> children);
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;
  ~Supervisor();

  void stop();
  // Dynamic children. The kernel ties a child's parent-death signal to the
  // thread that forks it (Process): call these from a thread that lives as
  // long as the supervisor. start_child(spec) adds and starts a child under any
  // strategy (ActorError if the id exists); start_child() makes one from the
  // simple_one_for_one template and returns its id. terminate_child stops
  // one in order and forgets it (it is not restarted).
  std::string start_child(ChildSpec spec);
  std::string start_child();
  void terminate_child(const std::string& id);
  // True once the supervisor stopped its children on its own: it gave up
  // (failed()) or an auto_shutdown condition was met.
  [[nodiscard]] bool finished() const;
  // True once the supervisor gave up (intensity); failure() says why.
  [[nodiscard]] bool failed() const;
  [[nodiscard]] std::string failure() const;
  // Blocks until failed() or the timeout; returns failed().
  bool wait_failed(std::chrono::milliseconds timeout) const;

  [[nodiscard]] const std::string& name() const;
  [[nodiscard]] std::vector<ChildInfo> which_children() const;
  [[nodiscard]] ChildCounts count_children() const;
  [[nodiscard]] std::vector<ExitReport> reports() const;
  [[nodiscard]] SupervisorSnapshot snapshot() const;
  // The Host of a host child (refs: host(id).actor(name)); throws ActorError
  // (also for a host on another node: use actor()).
  [[nodiscard]] Host host(const std::string& id) const;
  // A ref to actor `name` of host child `id`, on this node or another; it
  // stays valid across the host's restarts. Throws ActorError.
  [[nodiscard]] ActorRef actor(const std::string& id, const std::string& name) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace mpx::actors
