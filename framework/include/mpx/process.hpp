// mpx/process.hpp: processes, as multiprocessing.Process.
//
// A Process runs a target callable (with arguments copied at construction),
// or the `run()` override of a subclass, in a child process:
//
//     mpx::Process p(worker, 12);         // fork start method (default)
//     p.start();
//     p.join();                           // or: bool done = p.join(1s);
//     *p.exitcode();                      // 0
//
// Exit codes, as Python reports them: 0 when the target returns (its return
// value is ignored), N for `mpx::exit(N)` or `std::exit(N)`, 1 for an
// uncaught exception (its type and message are logged at error level), -N
// for death by signal N. `exitcode()` is empty while the child runs.
//
// Start methods:
//   fork        the caller is forked; a target may capture anything. Forking
//               a parent whose other threads hold locks (malloc excepted,
//               which glibc makes fork-safe) can deadlock the child.
//   forkserver  a clean single-threaded helper, forked when
//               `set_start_method(StartMethod::forkserver)` is called (call
//               it early in main, before starting threads), forks the
//               workers. Targets must be plain functions registered with
//               MPX_REGISTER_FUNCTION, with serializable arguments; the
//               framework's primitives (Lock, RLock, Semaphore, Event,
//               Condition, Barrier, Value, Array, SharedMemory) are, their
//               memory travels as a descriptor (docs/processes.md).
//               The server ignores SIGINT (as Python's); if it dies anyway
//               (SIGKILL), the next start() reaps it and forks a new one.
//               Its workers die with it: their join() returns and their
//               exitcode() is -SIGKILL.
//   spawn       a fresh run of this program (posix_spawn of /proc/self/exe,
//               same argv and environment): the child shares and copies
//               nothing of the parent's memory, and starting it costs the
//               same whatever the parent's heap. Targets and arguments as
//               for forkserver, and the child's authkey is its Process's.
//               The program's main() must call mpx::freeze_support() first
//               thing: that is where a spawned child takes over (runs its
//               target and exits, so main's own work never runs in it);
//               start() throws ProcessError in a program whose main has not
//               called it. Static initialisers do run in the child.
// In a child, get_start_method() is the method the child was started with.
//
// Lifetime guarantees:
//   - Children are waited for through pidfds; mpx installs no signal handler
//     (no SIGCHLD handler), so it can live in a host that owns its signals.
//     Hosts must not set SIGCHLD to SIG_IGN (the kernel would then reap
//     children itself and exit codes would be lost). A host whose SIGCHLD
//     handler reaps every child (waitpid(-1, ...)) takes the exit status of
//     fork children: as in Python, their exit code is then unknown: join()
//     returns, is_alive() is false, exitcode() stays empty, and one warning
//     is logged. Forkserver children are not affected (the server reaps them).
//   - A child never outlives its parent: each child is started with
//     PR_SET_PDEATHSIG = SIGKILL and re-checks its parent right after. Note
//     the kernel ties this to the *thread* that started the child: start
//     processes from threads that live as long as the children should.
//   - When the parent returns from main or calls std::exit, its daemon
//     children are terminated and the others are joined (atexit handler).
//   - Destroying a Process object whose child still runs neither blocks nor
//     orphans it: the child stays tracked by the library, is listed by
//     active_children(), and is joined (daemon: terminated) at exit. A
//     warning is logged.
//   - In the child, the signal mask is cleared and SIGTERM's disposition
//     reset to default, so terminate() works whatever the host did.
//
// Errors: misuse and every failed start throw ProcessError; a failed system
// call (fork, pidfd_open, the fork server's socket, waitid, poll, signalling)
// throws its subclass ProcessOSError, with the errno.
//
// Threads: a Process object may be used from several threads (join from one
// while another calls is_alive()); start() must be called once.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <cereal/details/traits.hpp>

#include "mpx/detail/fd_passing.hpp"
#include "mpx/error.hpp"
#include "mpx/forkserver.hpp"
#include "mpx/serialization.hpp"

namespace mpx {

// Misuse of a process: starting twice, joining a process not started or not
// our child, a daemon starting children, an unregistered forkserver target.
class ProcessError : public Error {
 public:
  using Error::Error;
};

// A system call failed while starting, waiting for or signalling a process
// (fork, pidfd_open, the fork server's socket...): code() is its errno, and
// what() says what was being done and why it failed. The process layer's
// counterpart of mpx::OSError (mpx/sync_error.hpp): a ProcessError, so that
// every failed start is one.
class ProcessOSError : public ProcessError {
 public:
  ProcessOSError(const std::string& doing, int code);
  [[nodiscard]] int code() const noexcept { return code_; }

 private:
  int code_;
};

enum class StartMethod { fork, forkserver, spawn };

// Call first thing in main() of a program that starts processes with the
// spawn start method (Python's freeze_support): in a spawned child it runs
// the child's target and exits, never returning; elsewhere it returns at
// once. Safe to call in any program.
void freeze_support();

// Sets the default start method of this process. `forkserver` starts the
// fork server now if it is not running: call it before creating threads.
void set_start_method(StartMethod method);
[[nodiscard]] StartMethod get_start_method();

// Limits of a child, applied in it before its target runs (under fork and
// forkserver alike). Empty fields leave what the child inherits. A child
// that cannot apply them logs why and exits with code 1 without running its
// target. start() throws ProcessError for a nice value outside [-20, 19] or
// a CPU outside [0, CPU_SETSIZE).
struct ProcessLimits {
  // RLIMIT_AS, bytes: allocations past it fail (std::bad_alloc; uncaught,
  // exit code 1 and an error log line naming it).
  std::optional<std::uint64_t> address_space;
  // RLIMIT_CPU, seconds of CPU time: the kernel then kills the child with
  // SIGXCPU (exitcode -SIGXCPU), and with SIGKILL one second later if it
  // survives that; the parent logs a warning naming the limit.
  std::optional<std::uint64_t> cpu_seconds;
  // RLIMIT_NOFILE: descriptors numbered from this on cannot be opened (EMFILE).
  std::optional<std::uint64_t> open_files;
  // The child's nice value (setpriority); lowering it needs CAP_SYS_NICE.
  std::optional<int> nice;
  // The CPUs the child may run on (sched_setaffinity); empty: inherited.
  std::vector<int> cpu_affinity;
  // The child's timer slack (prctl PR_SET_TIMERSLACK): how much later than
  // asked the kernel may end its sleeps and timed waits, to group wake-ups
  // (not for real-time threads, which get none). Empty: the parent's
  // (Linux's default is 50 us, which a task of many short sleeps pays on
  // each); 1 us ends them nearer their time at the cost of more timer
  // interrupts (mpx::Pool's workers use 1 us unless this is set). Threads
  // the child starts inherit it. start() throws ProcessError outside
  // [1 ns, 1 s] (a longer slack would delay mpx's own timed waits too).
  std::optional<std::chrono::nanoseconds> timer_slack;

  // Equal to ProcessLimits{}: none set (the parent's limits apply).
  bool operator==(const ProcessLimits&) const = default;

  template <class Archive>
  void serialize(Archive& ar) {
    ar(address_space, cpu_seconds, open_files, nice, cpu_affinity, timer_slack);
  }
};

// How to start a process. Chain the setters,
//     mpx::Process p(mpx::ProcessOptions().with_name("my_service").with_daemon(), fn);
// (designated initializers work too, but g++ 12 warns under -Wextra unless
// every field is given).
struct ProcessOptions {
  std::string name;                         // empty: "<Class>-N" (N counts per parent), e.g. "Process-1"
  bool daemon = false;                      // terminated, not joined, when the parent exits
  std::optional<StartMethod> start_method;  // empty: get_start_method() at start()
  ProcessLimits limits;                     // resource limits, nice value, CPU affinity, timer slack (above)

  ProcessOptions& with_name(std::string value) & {
    name = std::move(value);
    return *this;
  }
  ProcessOptions&& with_name(std::string value) && { return std::move(with_name(std::move(value))); }
  ProcessOptions& with_daemon(bool value = true) & {
    daemon = value;
    return *this;
  }
  ProcessOptions&& with_daemon(bool value = true) && { return std::move(with_daemon(value)); }
  ProcessOptions& with_start_method(StartMethod value) & {
    start_method = value;
    return *this;
  }
  ProcessOptions&& with_start_method(StartMethod value) && { return std::move(with_start_method(value)); }
  ProcessOptions& with_limits(ProcessLimits value) & {
    limits = std::move(value);
    return *this;
  }
  ProcessOptions&& with_limits(ProcessLimits value) && { return std::move(with_limits(std::move(value))); }
};

// Who a process is; what current_process() and parent_process() return,
// with the part of Python's process-object surface that applies to them.
struct ProcessInfo {
  std::string name;  // "MainProcess" for the process that was not started by mpx
  pid_t pid = 0;
  bool daemon = false;

  // True while the process runs: always for current_process(); for
  // parent_process(), until the parent ends (watched through a pidfd opened
  // when this child started, so never a recycled pid). The no-orphan rule
  // still holds: a child is killed when its parent dies, so a child sees
  // its parent end only in that last instant.
  [[nodiscard]] bool is_alive() const;
  // Always empty: only a process' own parent learns its exit code.
  [[nodiscard]] std::optional<int> exitcode() const { return std::nullopt; }
  // Waits at most `timeout` for the process to end; true once it has.
  // Throws ProcessError for the calling process itself (it cannot join itself).
  template <class Rep, class Period>
  bool join(std::chrono::duration<Rep, Period> timeout) const {
    return join_for(std::chrono::duration_cast<std::chrono::nanoseconds>(timeout));
  }
  // A descriptor that becomes readable when the process ends (for poll);
  // for parent_process() only (ProcessError otherwise).
  [[nodiscard]] int sentinel() const;
  // The authentication key (Python's current_process().authkey): 32 random
  // bytes made when the main process loads mpx, inherited by every child (a
  // Process may give its child another, see Process::set_authkey). A byte
  // string, ready for Listener/Client. Only for the calling process itself
  // (ProcessError otherwise; Python's parent_process() has none either).
  [[nodiscard]] std::string authkey() const;
  // Replaces the calling process' key (Python: current_process().authkey =
  // key); Processes constructed afterwards inherit it. ProcessError for
  // another process.
  void set_authkey(std::string key) const;

 private:
  bool join_for(std::chrono::nanoseconds timeout) const;
};

namespace detail {
struct ChildState;
struct RemoteCall {
  std::string function;  // registered name
  Bytes arguments;       // encoded std::tuple of the decayed parameter types
  std::vector<int> fds;  // descriptors the arguments' primitives travel with (borrowed from them)
};
std::optional<std::string> registered_name(void (*fn)());
template <class Tuple>
struct AllSerializable;
template <class... T>
struct AllSerializable<std::tuple<T...>>
    : std::bool_constant<(cereal::traits::is_output_serializable<T, BytesOutputArchive>::value &&
                          ...)> {};
template <class Tuple>
constexpr bool all_serializable() {
  return AllSerializable<Tuple>::value;
}
}  // namespace detail

// A started child, seen from its parent: what active_children() returns and
// what a Process delegates to once started. Cheap to copy; all copies refer
// to the same child.
class ProcessHandle {
 public:
  explicit ProcessHandle(std::shared_ptr<detail::ChildState> state) : state_(std::move(state)) {}

  [[nodiscard]] const std::string& name() const;
  [[nodiscard]] pid_t pid() const;
  [[nodiscard]] bool daemon() const;
  // Polls (and reaps) the child: false once it has ended.
  [[nodiscard]] bool is_alive() const;
  // Blocks until the child ends.
  void join() const;
  // Waits at most `timeout`; returns true if the child has ended.
  template <class Rep, class Period>
  bool join(std::chrono::duration<Rep, Period> timeout) const {
    return join_for(std::chrono::duration_cast<std::chrono::nanoseconds>(timeout));
  }
  void terminate() const;  // SIGTERM; no-op once the child has ended
  void kill() const;       // SIGKILL; no-op once the child has ended
  [[nodiscard]] std::optional<int> exitcode() const;
  // A file descriptor that becomes readable when the child ends (for poll).
  [[nodiscard]] int sentinel() const;
  [[nodiscard]] std::string to_string() const;

 private:
  bool join_for(std::optional<std::chrono::nanoseconds> timeout) const;
  std::shared_ptr<detail::ChildState> state_;
};

class Process {
 public:
  // For subclasses overriding run().
  Process() : Process(ProcessOptions{}) {}
  explicit Process(ProcessOptions options);

  template <class F, class... Args>
    requires std::is_invocable_v<std::decay_t<F>&, std::decay_t<Args>&...>
  explicit Process(F&& target, Args&&... args)
      : Process(ProcessOptions{}, std::forward<F>(target), std::forward<Args>(args)...) {}

  template <class F, class... Args>
    requires std::is_invocable_v<std::decay_t<F>&, std::decay_t<Args>&...>
  Process(ProcessOptions options, F&& target, Args&&... args) : Process(std::move(options)) {
    using Fn = std::decay_t<F>;
    if constexpr (std::is_pointer_v<Fn> && std::is_function_v<std::remove_pointer_t<Fn>>) {
      using Arguments = typename detail::FunctionTraits<Fn>::Arguments;
      if constexpr (std::is_constructible_v<Arguments, std::decay_t<Args>&...> &&
                    std::is_default_constructible_v<Arguments> && detail::all_serializable<Arguments>()) {
        // A plain function with serializable arguments: the forkserver can
        // run the same call by name. Both closures share one copy of the
        // arguments, converted to the parameter types.
        auto arguments = std::make_shared<Arguments>(args...);
        remote_call_ = [fn = target, arguments]() -> std::optional<detail::RemoteCall> {
          auto name = detail::registered_name(reinterpret_cast<void (*)()>(fn));
          if (!name) return std::nullopt;
          detail::FdSendScope passing;  // primitives in the arguments add their descriptors
          Bytes bytes = encode(*arguments);
          return detail::RemoteCall{*name, std::move(bytes), passing.fds()};
        };
        target_ = [fn = target, arguments] { std::apply([fn](auto&... values) { fn(values...); }, *arguments); };
        return;
      }
    }
    target_ = [fn = std::forward<F>(target), ... arguments = std::forward<Args>(args)]() mutable {
      std::invoke(fn, arguments...);
    };
  }

  Process(Process&&) noexcept;
  Process& operator=(Process&&) noexcept;
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  virtual ~Process();

  // Starts the child. Throws ProcessError when already started, when called
  // from a daemon process, when the start method cannot run this target
  // (forkserver: also an argument that cannot travel, e.g. a Barrier with an
  // action or a closed SharedMemory), or when the fork server failed to
  // answer (it died, or did not answer in time); ProcessOSError when a
  // system call failed.
  void start();
  // Blocks until the child ends. Throws ProcessError if not started.
  void join();
  template <class Rep, class Period>
  bool join(std::chrono::duration<Rep, Period> timeout) {
    return started().join(timeout);
  }
  [[nodiscard]] bool is_alive() const { return !check_open() && handle_ && handle_->is_alive(); }
  void terminate() { started().terminate(); }
  void kill() { started().kill(); }
  // 0 before start().
  [[nodiscard]] pid_t pid() const { return !check_open() && handle_ ? handle_->pid() : 0; }
  // Empty while the child runs, and after it ended if its exit status was
  // taken by a host's reaping SIGCHLD handler (see the top of this file).
  [[nodiscard]] std::optional<int> exitcode() const {
    return !check_open() && handle_ ? handle_->exitcode() : std::nullopt;
  }
  [[nodiscard]] int sentinel() const { return started().sentinel(); }

  // The given name, else "<Class>-N" as Python makes it: "Process-3" for a
  // Process, "Consumer-3" for a subclass named Consumer.
  [[nodiscard]] std::string name() const;
  void set_name(std::string name);
  [[nodiscard]] bool daemon() const { return options_.daemon; }
  // Before start() only; throws ProcessError afterwards.
  void set_daemon(bool daemon);

  // <Process name='Process-1' pid=4242 parent=4200 started daemon>
  [[nodiscard]] std::string to_string() const;

  // The handle of the started child (throws ProcessError before start()).
  [[nodiscard]] const ProcessHandle& handle() const { return started(); }

  // Releases the child's resources (its pidfd or status pipe), as Python's
  // close(). Throws ProcessError while the child runs (Python: ValueError).
  // Idempotent; allowed before start(). Afterwards every member except
  // name(), set_name(), daemon(), to_string(), authkey(), close() and
  // closed() throws ProcessError ("process object is closed").
  void close();
  [[nodiscard]] bool closed() const noexcept { return closed_; }

  // The key the child will have as current_process().authkey(): the
  // creating process' key at construction, unless set here before start().
  // Honoured by every start method (forkserver and spawn send it with the
  // start request).
  [[nodiscard]] const std::string& authkey() const noexcept { return authkey_; }
  void set_authkey(std::string key);

 protected:
  // The child's work. The default calls the target given at construction.
  virtual void run();

 private:
  const ProcessHandle& started() const;
  // Throws ProcessError once close() was called; returns false otherwise
  // (so it can open an expression).
  bool check_open() const;

  ProcessOptions options_;
  std::function<void()> target_;
  std::function<std::optional<detail::RemoteCall>()> remote_call_;
  std::vector<int> identity_;  // Python's _identity: position in the tree of started processes
  std::optional<ProcessHandle> handle_;
  std::string authkey_;
  bool closed_ = false;
};

std::ostream& operator<<(std::ostream& out, const Process& process);
std::ostream& operator<<(std::ostream& out, const ProcessHandle& process);

// Thrown by mpx::exit inside a child to end run() with an exit code while
// unwinding the stack (destructors run). Not derived from std::exception,
// so `catch (const std::exception&)` in user code does not swallow it.
struct SystemExit {
  int code;
};

// Ends the calling process with `code`, like Python's sys.exit: inside an
// mpx child it unwinds to the child's bootstrap (throws SystemExit), which
// then cleans up and exits; in any other process it calls std::exit.
[[noreturn]] void exit(int code);

[[nodiscard]] ProcessInfo current_process();
// The process that started this one (under forkserver: the one that asked
// the server for it); empty in the main process.
[[nodiscard]] std::optional<ProcessInfo> parent_process();
// Children of this process that are still running; reaps those that ended.
[[nodiscard]] std::vector<ProcessHandle> active_children();
// Number of online CPUs.
[[nodiscard]] int cpu_count();
// Number of CPUs this process may run on (its sched_getaffinity mask), as
// Python 3.13's process_cpu_count(); at most cpu_count() in practice, and at
// least 1.
[[nodiscard]] int process_cpu_count();

}  // namespace mpx
