#include "mpx/process.hpp"
#include "mpx/detail/demangle.hpp"

#include <cxxabi.h>
#include <poll.h>
#include <signal.h>
#include <sched.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <mutex>
#include <sstream>
#include <system_error>
#include <typeinfo>

#include "mpx/detail/deadline.hpp"
#include "mpx/logging.hpp"
#include "mpx/context.hpp"
#include "process_runtime.hpp"
#include "start_request.hpp"

namespace mpx {

namespace detail {

namespace {

// This process' runtime once it is a child made by mpx; null in the main
// process. Written only by become_child, single-threaded after fork.
std::atomic<Runtime*> g_child_runtime{nullptr};
std::atomic<bool> g_atexit_registered{false};

[[noreturn]] void throw_errno(const std::string& what) { throw ProcessOSError(what, errno); }

int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

// Whether `pidfd` names a child of ours that nobody has reaped yet (running,
// or ended and waiting for us). ECHILD: another waiter reaped it, and the pid
// the pidfd was opened from may already belong to an unrelated process.
bool still_our_child(int pidfd) {
  siginfo_t info{};
  int rc;
  do rc = ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd), &info, WEXITED | WNOHANG | WNOWAIT);
  while (rc < 0 && errno == EINTR);
  if (rc < 0 && errno == ECHILD) return false;
  return true;
}

int pidfd_send_signal(int pidfd, int sig) {
  return static_cast<int>(::syscall(SYS_pidfd_send_signal, pidfd, sig, nullptr, 0));
}

std::string identity_suffix(const std::vector<int>& identity) {
  std::string out;
  for (std::size_t i = 0; i < identity.size(); ++i) {
    if (i) out += ':';
    out += std::to_string(identity[i]);
  }
  return out;
}



// Reaps the child if it has ended, without blocking. Caller holds s.mutex.
// Returns whether it has ended; a server that died is reported through
// `server_died` (reaped by the caller, outside s.mutex).
bool try_reap_locked(ChildState& s, pid_t& server_died) {
  if (s.ended()) return true;
  if (s.status_fd) {  // forkserver child: the server relays the wait status
    pollfd p{s.status_fd.get(), POLLIN, 0};
    if (::poll(&p, 1, 0) <= 0) return false;
    int status = 0;  // an exit code
    ssize_t n;
    do n = ::read(s.status_fd.get(), &status, sizeof status);
    while (n < 0 && errno == EINTR);
    if (n == static_cast<ssize_t>(sizeof status)) {
      s.exitcode = status;  // the server sends the exit code, already converted
    } else {
      // The server died before reporting; PR_SET_PDEATHSIG killed the child
      // (or it had ended a moment before, and its own status is lost).
      get_logger()->error("the fork server (pid {}) died before reporting on {} (pid {}); exitcode -SIGKILL",
                          s.server_pid, s.name, s.pid);
      s.exitcode = -SIGKILL;
      server_died = s.server_pid;
    }
    return true;
  }
  siginfo_t info{};
  int rc;
  do rc = ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(s.pidfd.get()), &info, WEXITED | WNOHANG);
  while (rc < 0 && errno == EINTR);
  if (rc < 0 && errno == ECHILD) {
    // Reaped by someone else: a host's SIGCHLD handler calling waitpid(-1),
    // or SIGCHLD set to SIG_IGN. As Python, the exit code stays unknown.
    get_logger()->warn(
        "{} (pid {}) has ended but its exit status was taken by another waiter (a SIGCHLD handler calling "
        "waitpid(-1, ...), or SIGCHLD ignored); its exitcode is unknown",
        s.name, s.pid);
    s.status_lost = true;
    return true;
  }
  if (rc < 0) throw_errno("waiting for " + s.name + " (waitid P_PIDFD)");
  if (info.si_pid == 0) return false;
  s.exitcode = info.si_code == CLD_EXITED ? info.si_status : -info.si_status;
  return true;
}

// In the child: the limits of its ProcessOptions. Returns what failed, or empty.
std::string apply_limits(const ProcessLimits& limits) {
  auto set_limit = [](int resource, std::uint64_t value, std::uint64_t hard, const char* name) -> std::string {
    rlimit r{static_cast<rlim_t>(value), static_cast<rlim_t>(hard)};
    if (::setrlimit(resource, &r) != 0) return std::string("setrlimit(") + name + "): " + std::strerror(errno);
    return {};
  };
  std::string failed;
  if (limits.address_space) failed = set_limit(RLIMIT_AS, *limits.address_space, *limits.address_space, "RLIMIT_AS");
  // Hard one second above soft: SIGXCPU first (the exit code says why), SIGKILL if it is survived.
  if (failed.empty() && limits.cpu_seconds)
    failed = set_limit(RLIMIT_CPU, *limits.cpu_seconds, *limits.cpu_seconds + 1, "RLIMIT_CPU");
  if (failed.empty() && limits.open_files)
    failed = set_limit(RLIMIT_NOFILE, *limits.open_files, *limits.open_files, "RLIMIT_NOFILE");
  if (failed.empty() && limits.nice && ::setpriority(PRIO_PROCESS, 0, *limits.nice) != 0)
    failed = std::string("setpriority(") + std::to_string(*limits.nice) + "): " + std::strerror(errno);
  if (failed.empty() && !limits.cpu_affinity.empty()) {
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int cpu : limits.cpu_affinity) CPU_SET(cpu, &set);
    if (::sched_setaffinity(0, sizeof set, &set) != 0)
      failed = std::string("sched_setaffinity: ") + std::strerror(errno);
  }
  if (failed.empty() && limits.timer_slack &&
      ::prctl(PR_SET_TIMERSLACK, static_cast<unsigned long>(limits.timer_slack->count()), 0, 0, 0) != 0)
    failed = std::string("prctl(PR_SET_TIMERSLACK): ") + std::strerror(errno);
  return failed;
}

void validate_limits(const ProcessLimits& limits, const std::string& name) {
  if (limits.nice && (*limits.nice < -20 || *limits.nice > 19))
    throw ProcessError("cannot start '" + name + "': nice value " + std::to_string(*limits.nice) +
                       " outside [-20, 19]");
  if (limits.timer_slack && (limits.timer_slack->count() < 1 || *limits.timer_slack > std::chrono::seconds(1)))
    throw ProcessError("cannot start '" + name + "': timer slack " + std::to_string(limits.timer_slack->count()) +
                       " ns outside [1 ns, 1 s]");
  for (int cpu : limits.cpu_affinity) {
    if (cpu < 0 || cpu >= CPU_SETSIZE)
      throw ProcessError("cannot start '" + name + "': CPU " + std::to_string(cpu) + " outside [0, " +
                         std::to_string(CPU_SETSIZE) + ")");
  }
}

void forget_child(const std::shared_ptr<ChildState>& state) {
  auto& rt = runtime();
  std::lock_guard lock(rt.mutex);
  std::erase(rt.children, state);
}

// Reaps if ended; on reaping, logs and drops the child from the registry.
bool poll_child(const std::shared_ptr<ChildState>& state) {
  bool ended;
  bool newly_reaped = false;
  pid_t server_died = 0;
  std::optional<int> code;
  {
    std::lock_guard lock(state->mutex);
    bool before = state->ended();
    ended = try_reap_locked(*state, server_died);
    newly_reaped = ended && !before;
    code = state->exitcode;
  }
  if (server_died) forkserver_died(server_died);
  if (newly_reaped) {
    if (code) get_logger()->debug("{} (pid {}) ended with exitcode {}", state->name, state->pid, *code);
    if (code == -SIGXCPU && state->cpu_limit) {
      get_logger()->warn("{} (pid {}) was killed by its CPU time limit ({} s): exitcode -SIGXCPU", state->name,
                         state->pid, *state->cpu_limit);
    }
    forget_child(state);
  }
  return ended;
}

void require_owner(const ChildState& s, const char* what) {
  if (s.owner != ::getpid()) {
    throw ProcessError(std::string("can only ") + what + " a child process ('" + s.name + "', pid " +
                       std::to_string(s.pid) + ", was started by pid " + std::to_string(s.owner) + ")");
  }
}

void atexit_handler() {
  try {
    finalize_children();
  } catch (...) {
    // Exiting anyway; nothing left to report to.
  }
}

// ---- the authentication key ------------------------------------------------
//
// Made at load time (g_authkey_made), before any fork: a fork server started
// later inherits the same key as the process that starts it. Behind a
// function so that a Process built during static initialisation finds it
// made. The mutex is heap-allocated so that a forked child can drop one
// inherited locked (adopt_authkey).
struct AuthkeyState {
  std::mutex* mutex = nullptr;  // never destroyed: used until exit
  std::string key;
};

std::string random_authkey() {
  std::string key(32, '\0');
  std::size_t filled = 0;
  while (filled < key.size()) {
    ssize_t n = ::getrandom(key.data() + filled, key.size() - filled, 0);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) throw std::system_error(errno, std::generic_category(), "getrandom for the authkey");
    filled += static_cast<std::size_t>(n);
  }
  return key;
}

AuthkeyState& authkey_state() {
  static AuthkeyState* state = new AuthkeyState{new std::mutex, random_authkey()};  // never destroyed
  return *state;
}
[[maybe_unused]] const bool g_authkey_made = (authkey_state(), true);

std::string get_authkey() {
  auto& a = authkey_state();
  std::lock_guard lock(*a.mutex);
  return a.key;
}

void put_authkey(std::string key) {
  auto& a = authkey_state();
  std::lock_guard lock(*a.mutex);
  a.key = std::move(key);
}

}  // namespace

void adopt_authkey(const std::string& key) {
  auto& a = authkey_state();
  a.mutex = new std::mutex;  // the inherited one may be locked; abandoned
  a.key = key;
}

namespace {

std::shared_ptr<ChildState> fork_start(const ChildIdentity& who, Process& process, void (Process::*run)()) {
  flush_std_streams();
  pid_t pid = ::fork();
  if (pid < 0) throw_errno("starting '" + who.name + "' (fork)");
  if (pid == 0) {
    become_child(who);
    adopt_authkey(process.authkey());
    run_child_and_exit([&] { (process.*run)(); });
  }
  return watch_direct_child(pid, who.name);
}

}  // namespace

std::shared_ptr<ChildState> watch_direct_child(pid_t pid, const std::string& name) {
  auto state = std::make_shared<ChildState>();
  state->pid = pid;
  state->owner = ::getpid();
  state->pidfd.reset(pidfd_open(pid));
  if (state->pidfd && !still_our_child(state->pidfd.get())) state->pidfd.reset();
  if (!state->pidfd) {
    int err = errno;
    if (err != ESRCH && err != ECHILD) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
      throw ProcessOSError("starting '" + name + "' (pidfd_open)", err);
    }
    // A short child was reaped by a host's SIGCHLD handler (or SIGCHLD is
    // ignored) before its pidfd existed, and its pid may already be someone
    // else's: never open or signal it. It has ended with an unknown exit
    // code, and its sentinel is a descriptor that is readable at once.
    get_logger()->warn(
        "{} (pid {}) ended and was reaped by another waiter (a SIGCHLD handler calling waitpid(-1, ...), or "
        "SIGCHLD ignored) before mpx could watch it; its exitcode is unknown",
        name, pid);
    state->pidfd.reset(::eventfd(1, EFD_CLOEXEC));
    if (!state->pidfd) throw ProcessOSError("starting '" + name + "' (eventfd)", errno);
    state->status_lost = true;
  }
  return state;
}

ChildState::~ChildState() {
  // A forked child inherits these descriptors but closes them itself at the
  // fork (become_child); only the owner closes them here.
  if (owner != ::getpid()) {
    (void)pidfd.release();
    (void)status_fd.release();
  }
}

Runtime& runtime() {
  if (Runtime* child = g_child_runtime.load(std::memory_order_acquire)) return *child;
  static Runtime* main_runtime = [] {  // thread-safe first use
    auto* r = new Runtime();           // never destroyed: the atexit handler uses it
    r->self = ProcessInfo{"MainProcess", ::getpid(), false};
    return r;
  }();
  return *main_runtime;
}

int exitcode_from_status(int status) {
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  if (WIFSIGNALED(status)) return -WTERMSIG(status);
  return -1;
}

void flush_std_streams() {
  std::cout.flush();
  std::cerr.flush();
  std::fflush(nullptr);
}

void become_child(const ChildIdentity& who) {
  // Die with the parent. The parent may already have died between fork and
  // prctl: then our parent is no longer the one that forked us.
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != who.expected_ppid) ::raise(SIGKILL);

  // terminate() must work whatever signal state the host left the forking thread in.
  sigset_t none;
  sigemptyset(&none);
  ::pthread_sigmask(SIG_SETMASK, &none, nullptr);
  ::signal(SIGTERM, SIG_DFL);

  // The parent's children are not ours: close their descriptors. The old
  // runtime is abandoned, not destroyed: another thread may have held its
  // mutex at the fork.
  Runtime* old = &runtime();
  if (old && old->mutex.try_lock()) {
    for (auto& child : old->children) {
      child->pidfd.reset();
      child->status_fd.reset();
    }
    // Never unlocked: the old runtime is never used again.
  }
  old->parent_pidfd.reset();  // written only at a fork, never concurrently
  auto* fresh = new Runtime();
  fresh->self = ProcessInfo{who.name, ::getpid(), who.daemon};
  fresh->parent = who.parent;
  // The parent is alive here (checked above, or, under forkserver, the server
  // that dies with it is), so its pid is not yet recycled.
  fresh->parent_pidfd.reset(pidfd_open(who.parent.pid));
  fresh->identity = who.identity;
  fresh->start_method = who.start_method;
  g_child_runtime.store(fresh, std::memory_order_release);
  close_forkserver_in_child();
  reset_logging_after_fork();
  if (std::string failed = apply_limits(who.limits); !failed.empty()) {
    get_logger()->error("process {} (pid {}) cannot apply its limits: {}; exiting", who.name, ::getpid(), failed);
    flush_std_streams();
    ::_exit(1);
  }
}

void run_child_and_exit(const std::function<void()>& body) {
  auto logger = get_logger();
  runtime().bootstrap_thread = std::this_thread::get_id();
  logger->info("process started (parent pid {})", runtime().parent ? runtime().parent->pid : 0);
  int code = 0;
  try {
    body();
  } catch (const SystemExit& exit) {
    code = exit.code;
  } catch (const std::exception& e) {
    logger->error("process {} (pid {}) failed: uncaught exception {}: {}", runtime().self.name, ::getpid(),
                  current_exception_type(), e.what());
    code = 1;
  } catch (...) {
    logger->error("process {} (pid {}) failed: uncaught exception of type {}", runtime().self.name, ::getpid(),
                  current_exception_type());
    code = 1;
  }
  runtime().bootstrap_thread.reset();
  try {
    finalize_children();
  } catch (const std::exception& e) {
    logger->error("while joining children: {}", e.what());
  }
  logger->info("process exiting with exitcode {}", code);
  flush_std_streams();
  ::_exit(code);
}

void finalize_children() {
  std::vector<std::shared_ptr<ChildState>> children;
  {
    auto& rt = runtime();
    std::lock_guard lock(rt.mutex);
    children = rt.children;
  }
  if (children.empty()) return;
  auto logger = get_logger();
  logger->info("process shutting down");
  for (auto& child : children) {
    if (child->daemon && child->owner == ::getpid() && !poll_child(child)) {
      logger->info("calling terminate() for daemon {}", child->name);
      ProcessHandle(child).terminate();
    }
  }
  for (auto& child : children) {
    if (child->owner != ::getpid()) continue;
    logger->info("calling join() for process {}", child->name);
    ProcessHandle(child).join();
  }
}

void ensure_atexit_registered() {
  if (g_atexit_registered.exchange(true)) return;
  // The logger must outlive the handler: construct it before registering,
  // so that it is destroyed after the handler has run.
  (void)get_logger();
  std::atexit(atexit_handler);
}

}  // namespace detail

using detail::runtime;

ProcessOSError::ProcessOSError(const std::string& doing, int code)
    : ProcessError(doing + ": " + std::strerror(code) + " (errno " + std::to_string(code) + ")"), code_(code) {}

// ---- module functions --------------------------------------------------------

void set_start_method(StartMethod method) {
  if (method == StartMethod::forkserver) detail::ensure_forkserver();
  std::lock_guard lock(runtime().mutex);
  runtime().start_method = method;
}

StartMethod get_start_method() {
  std::lock_guard lock(runtime().mutex);
  return runtime().start_method;
}

void exit(int code) {
  auto& rt = runtime();
  if (rt.bootstrap_thread == std::this_thread::get_id()) throw SystemExit{code};
  std::exit(code);
}

ProcessInfo current_process() {
  auto& rt = runtime();
  return rt.self;
}

std::optional<ProcessInfo> parent_process() { return runtime().parent; }

namespace {
// The pidfd of `info`'s process: the runtime's own for the parent, else a
// fresh one (-1 and errno ESRCH when the pid has ended). `owned` keeps a
// fresh one open for the caller.
int pidfd_of(const ProcessInfo& info, detail::UniqueFd& owned) {
  auto& rt = runtime();
  if (rt.parent && rt.parent->pid == info.pid && rt.parent_pidfd) return rt.parent_pidfd.get();
  owned.reset(detail::pidfd_open(info.pid));
  return owned.get();
}
}  // namespace

bool ProcessInfo::is_alive() const {
  if (pid == ::getpid()) return true;
  detail::UniqueFd owned;
  int fd = pidfd_of(*this, owned);
  if (fd < 0) {
    if (errno == ESRCH) return false;
    detail::throw_errno("watching process " + name + " (pidfd_open)");
  }
  pollfd p{fd, POLLIN, 0};
  return ::poll(&p, 1, 0) == 0;
}

bool ProcessInfo::join_for(std::chrono::nanoseconds timeout) const {
  if (pid == ::getpid()) throw ProcessError("a process cannot join itself ('" + name + "')");
  detail::UniqueFd owned;
  int fd = pidfd_of(*this, owned);
  if (fd < 0) {
    if (errno == ESRCH) return true;
    detail::throw_errno("joining process " + name + " (pidfd_open)");
  }
  auto deadline = detail::Deadline::after(timeout);
  for (;;) {
    pollfd p{fd, POLLIN, 0};
    int rc = ::poll(&p, 1, deadline.poll_timeout_ms());
    if (rc > 0) return true;
    if (rc < 0 && errno != EINTR) detail::throw_errno("joining process " + name + " (poll)");
    if (deadline.expired()) return false;
  }
}

int ProcessInfo::sentinel() const {
  auto& rt = runtime();
  if (!rt.parent || rt.parent->pid != pid || !rt.parent_pidfd) {
    throw ProcessError("no sentinel for process " + name + ": only parent_process() has one");
  }
  return rt.parent_pidfd.get();
}

std::vector<ProcessHandle> active_children() {
  std::vector<std::shared_ptr<detail::ChildState>> children;
  {
    auto& rt = runtime();
    std::lock_guard lock(rt.mutex);
    children = rt.children;
  }
  std::vector<ProcessHandle> alive;
  for (auto& child : children) {
    if (child->owner == ::getpid() && !detail::poll_child(child)) alive.emplace_back(child);
  }
  return alive;
}

int cpu_count() {
  long n = ::sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? static_cast<int>(n) : 1;
}

int process_cpu_count() {
  // A dynamic set: the mask may be larger than CPU_SETSIZE on big machines.
  for (int cpus = CPU_SETSIZE;; cpus *= 2) {
    cpu_set_t* set = CPU_ALLOC(cpus);
    if (!set) throw std::bad_alloc();
    std::size_t size = CPU_ALLOC_SIZE(cpus);
    int rc = ::sched_getaffinity(0, size, set);
    int count = rc == 0 ? CPU_COUNT_S(size, set) : 0;
    int err = errno;
    CPU_FREE(set);
    if (rc == 0) return count > 0 ? count : 1;
    if (err != EINVAL || cpus > (1 << 20)) return cpu_count();  // no affinity to report: all of them
  }
}

std::string ProcessInfo::authkey() const {
  if (pid != ::getpid()) {
    throw ProcessError("the authkey of process " + name + " (pid " + std::to_string(pid) +
                       ") is unknown here: only current_process() has one");
  }
  return detail::get_authkey();
}

void ProcessInfo::set_authkey(std::string key) const {
  if (pid != ::getpid()) {
    throw ProcessError("cannot set the authkey of process " + name + " (pid " + std::to_string(pid) +
                       "): only current_process()'s");
  }
  detail::put_authkey(std::move(key));
}

// ---- ProcessHandle -----------------------------------------------------------

const std::string& ProcessHandle::name() const { return state_->name; }
pid_t ProcessHandle::pid() const { return state_->pid; }
bool ProcessHandle::daemon() const { return state_->daemon; }
int ProcessHandle::sentinel() const { return state_->wait_fd(); }

bool ProcessHandle::is_alive() const {
  if (state_->owner != ::getpid()) {
    std::lock_guard lock(state_->mutex);
    if (state_->ended()) return false;
    detail::require_owner(*state_, "test");
  }
  return !detail::poll_child(state_);
}

void ProcessHandle::join() const { join_for(std::nullopt); }

bool ProcessHandle::join_for(std::optional<std::chrono::nanoseconds> timeout) const {
  detail::require_owner(*state_, "join");
  auto deadline = detail::Deadline::from(timeout);
  for (;;) {
    // The wait fd stays readable once the child has ended (reaped or not),
    // so poll first and reap once: one waitid per join on the common path.
    pollfd p{state_->wait_fd(), POLLIN, 0};
    int rc = ::poll(&p, 1, deadline.poll_timeout_ms());
    if (rc < 0 && errno != EINTR) detail::throw_errno("joining " + state_->name + " (poll)");
    if (rc > 0 && detail::poll_child(state_)) return true;
    if (rc == 0 && deadline.expired()) return detail::poll_child(state_);
  }
}

void ProcessHandle::terminate() const {
  std::lock_guard lock(state_->mutex);
  if (state_->ended()) return;
  // Through the pidfd: never signals a recycled pid. ESRCH: already ended.
  if (detail::pidfd_send_signal(state_->pidfd.get(), SIGTERM) < 0 && errno != ESRCH) {
    detail::throw_errno("terminating " + state_->name + " (pidfd_send_signal SIGTERM)");
  }
}

void ProcessHandle::kill() const {
  std::lock_guard lock(state_->mutex);
  if (state_->ended()) return;
  if (detail::pidfd_send_signal(state_->pidfd.get(), SIGKILL) < 0 && errno != ESRCH) {
    detail::throw_errno("killing " + state_->name + " (pidfd_send_signal SIGKILL)");
  }
}

std::optional<int> ProcessHandle::exitcode() const {
  if (state_->owner == ::getpid()) detail::poll_child(state_);
  std::lock_guard lock(state_->mutex);
  return state_->exitcode;
}

namespace {
std::string describe_exitcode(int code) {
  if (code >= 0) return std::to_string(code);
  const char* abbrev = ::sigabbrev_np(-code);
  return abbrev ? std::string("-SIG") + abbrev : std::to_string(code);
}

std::string describe(const std::string& name, std::optional<pid_t> pid, pid_t parent,
                     std::optional<int> exitcode, bool started, bool daemon, bool status_lost = false) {
  std::ostringstream out;
  out << "<Process name='" << name << "'";
  if (pid) out << " pid=" << *pid;
  out << " parent=" << parent;
  if (!started) out << " initial";
  else if (exitcode) out << " stopped exitcode=" << describe_exitcode(*exitcode);
  else if (status_lost) out << " stopped exitcode=unknown";
  else out << " started";
  if (daemon) out << " daemon";
  out << ">";
  return out.str();
}
}  // namespace

std::string ProcessHandle::to_string() const {
  auto code = exitcode();
  bool lost;
  {
    std::lock_guard lock(state_->mutex);
    lost = state_->status_lost;
  }
  return describe(state_->name, state_->pid, state_->owner, code, true, state_->daemon, lost);
}

// ---- Process -----------------------------------------------------------------

Process::Process(ProcessOptions options) : options_(std::move(options)) {
  authkey_ = detail::get_authkey();
  auto& rt = runtime();
  std::lock_guard lock(rt.mutex);
  identity_ = rt.identity;
  identity_.push_back(++rt.child_counter);
}

// A moved-from Process is back in the initial state: it owns no child.
Process::Process(Process&& other) noexcept
    : options_(std::move(other.options_)),
      target_(std::move(other.target_)),
      remote_call_(std::move(other.remote_call_)),
      identity_(std::move(other.identity_)),
      handle_(std::exchange(other.handle_, std::nullopt)),
      authkey_(std::move(other.authkey_)),
      closed_(std::exchange(other.closed_, false)) {}

Process& Process::operator=(Process&& other) noexcept {
  if (this != &other) {
    options_ = std::move(other.options_);
    target_ = std::move(other.target_);
    remote_call_ = std::move(other.remote_call_);
    identity_ = std::move(other.identity_);
    handle_ = std::exchange(other.handle_, std::nullopt);
    authkey_ = std::move(other.authkey_);
    closed_ = std::exchange(other.closed_, false);
  }
  return *this;
}

Process::~Process() {
  if (!handle_) return;
  try {
    if (handle_->is_alive()) {
      get_logger()->info(
          "Process object of {} (pid {}) destroyed while the child runs; the child stays tracked and is "
          "{} at exit",
          handle_->name(), handle_->pid(), handle_->daemon() ? "terminated" : "joined");
    }
  } catch (...) {
    // Not our child (a copy inherited by fork): nothing to report.
  }
}

void Process::run() {
  if (target_) target_();
}

bool Process::check_open() const {
  if (closed_) throw ProcessError("process object is closed ('" + name() + "')");
  return false;
}

void Process::close() {
  if (closed_) return;
  if (handle_ && handle_->is_alive()) {
    throw ProcessError("cannot close process '" + options_.name + "' (pid " + std::to_string(handle_->pid()) +
                       ") while it is still running; join() it first");
  }
  // is_alive() reaped the child and dropped it from the registry: the
  // handle holds the last reference to its descriptors.
  handle_.reset();
  closed_ = true;
}

void Process::set_authkey(std::string key) {
  check_open();
  authkey_ = std::move(key);
}

const ProcessHandle& Process::started() const {
  check_open();
  if (!handle_) throw ProcessError("process '" + name() + "' has not been started");
  return *handle_;
}

void Process::join() { started().join(); }

void Process::set_name(std::string name) { options_.name = std::move(name); }

std::string Process::name() const {
  if (!options_.name.empty()) return options_.name;
  // Python: type(self).__name__ + "-" + identity. The dynamic type, so a
  // subclass Consumer gives "Consumer-2"; namespaces and enclosing scopes
  // are dropped.
  std::string type = detail::demangle(typeid(*this).name());
  std::size_t depth = 0, start = 0;
  for (std::size_t i = 0; i < type.size(); ++i) {
    if (type[i] == '<' || type[i] == '(') ++depth;
    else if ((type[i] == '>' || type[i] == ')') && depth > 0) --depth;
    else if (depth == 0 && type[i] == ':' && i + 1 < type.size() && type[i + 1] == ':') start = i + 2;
  }
  return type.substr(start) + "-" + detail::identity_suffix(identity_);
}

void Process::set_daemon(bool daemon) {
  check_open();
  if (handle_) throw ProcessError("cannot change the daemon flag of a started process");
  options_.daemon = daemon;
}

void Process::start() {
  check_open();
  if (handle_) throw ProcessError("cannot start a process twice ('" + options_.name + "')");
  if (options_.name.empty()) options_.name = name();  // frozen from now on
  auto& rt = runtime();
  if (rt.self.daemon) throw ProcessError("daemonic processes are not allowed to have children");
  detail::ensure_atexit_registered();

  StartMethod method = options_.start_method.value_or(get_start_method());
  detail::validate_limits(options_.limits, options_.name);
  detail::ChildIdentity who{options_.name, options_.daemon, identity_, rt.self, ::getpid(), method, options_.limits};
  std::shared_ptr<detail::ChildState> state;
  if (method == StartMethod::forkserver || method == StartMethod::spawn) {
    const std::string with = "cannot start '" + options_.name + "' with the " + std::string(mpx::to_string(method)) +
                             " start method: ";
    std::optional<detail::RemoteCall> call;
    try {
      if (remote_call_) call = remote_call_();
    } catch (const ProcessError&) {
      throw;
    } catch (const Error& e) {  // an argument that cannot travel (a Barrier with an action, a closed SharedMemory)
      throw ProcessError(with + e.what());
    }
    if (!call) {
      throw ProcessError(with +
                         "its target must be a function registered with MPX_REGISTER_FUNCTION, with serializable "
                         "arguments (closures and run() overrides need the fork start method)");
    }
    state = method == StartMethod::spawn ? detail::spawn_start(who, *call, authkey_)
                                         : detail::forkserver_start(who, *call, authkey_);
  } else {
    state = detail::fork_start(who, *this, &Process::run);
  }
  state->name = options_.name;
  state->daemon = options_.daemon;
  state->cpu_limit = options_.limits.cpu_seconds;
  state->owner = ::getpid();
  {
    std::lock_guard lock(rt.mutex);
    if (!state->ended()) rt.children.push_back(state);  // ended: reaped by the host at once
  }
  handle_.emplace(state);
  get_logger()->debug("started {} (pid {})", options_.name, state->pid);
}

std::string Process::to_string() const {
  if (closed_) {
    return "<Process name='" + name() + "' parent=" + std::to_string(::getpid()) + " closed" +
           (options_.daemon ? " daemon>" : ">");
  }
  if (handle_) return handle_->to_string();
  return describe(name(), std::nullopt, ::getpid(), std::nullopt, false, options_.daemon);
}

std::ostream& operator<<(std::ostream& out, const Process& process) { return out << process.to_string(); }
std::ostream& operator<<(std::ostream& out, const ProcessHandle& process) { return out << process.to_string(); }

}  // namespace mpx
