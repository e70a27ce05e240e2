// The fork server: a single-threaded helper, forked from the main process
// when set_start_method(StartMethod::forkserver) is called, that forks the
// workers on request so that a multi-threaded parent never forks itself.
//
// Protocol, over a SOCK_SEQPACKET socketpair (one datagram per message):
//   parent -> server  StartRequest (start_request.hpp, encoded with mpx::encode), with an id, and
//                     SCM_RIGHTS [the descriptors of the primitives among the
//                     arguments] (fd_passing.hpp)
//   server -> parent  ForkReply with the same id, and SCM_RIGHTS [pidfd,
//                     status pipe read end]
// The server owns the passed descriptors only until it has forked: the worker
// inherits them and closes them once it has decoded its arguments, the
// server closes its copies right after the fork (or on failure), so a worker
// that dies leaves nothing open behind it.
// The id lets the parent discard the late reply of a request that timed out
// (it kills that worker) instead of taking it for the next request's.
// The server reaps each worker and writes its exit code (an int) into the
// worker's status pipe; the parent's join() waits on that pipe. The server
// dies with its parent (PR_SET_PDEATHSIG), and the workers with the server.
// It ignores SIGINT (Ctrl-C reaches the whole foreground process group) as
// Python's does; when it died anyway, the parent reaps it and the next
// start() forks a new one.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cereal/types/optional.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/vector.hpp>
#include <atomic>
#include <cstring>
#include <dirent.h>
#include <map>
#include <mutex>

#include "mpx/detail/deadline.hpp"
#include "mpx/detail/fd_passing.hpp"
#include "mpx/logging.hpp"
#include "mpx/sync_error.hpp"
#include "process_runtime.hpp"
#include "start_request.hpp"

namespace mpx::detail {

namespace {

std::atomic<std::int64_t> g_reply_timeout_ms{30'000};

struct ForkReply {
  std::uint64_t id = 0;  // the request's
  int pid = 0;
  std::string error;     // empty on success

  template <class Archive>
  void serialize(Archive& ar) {
    ar(id, pid, error);
  }
};

struct FunctionRegistry {
  std::map<std::string, RemoteInvoker> by_name;
  std::map<void (*)(), std::string> by_address;
};

FunctionRegistry& functions() {
  static FunctionRegistry registry;  // filled during static initialisation
  return registry;
}

// The client side, in the process that started the server.
struct Client {
  std::mutex mutex;  // one request/reply exchange at a time; guards the rest
  UniqueFd socket;
  UniqueFd server_pidfd;  // tells a dead server, and reaps it
  pid_t server_pid = 0;
  pid_t owner = 0;
  std::uint64_t last_id = 0;
};
// Never destroyed: used from the atexit handler. A child replaces it
// (close_forkserver_in_child).
Client*& client_slot() {
  static Client* c = new Client();
  return c;
}
Client& client() { return *client_slot(); }

// In the server: descriptors a worker must not inherit.
std::vector<int>* g_server_fds = nullptr;

// In the server: the dispositions it changed, as the parent had them; its
// workers get them back (as a fork child would have them).
constexpr int kServerSignals[] = {SIGINT, SIGPIPE, SIGCHLD};
struct sigaction g_inherited[std::size(kServerSignals)];

[[noreturn]] void throw_errno(const std::string& what) { throw ProcessOSError(what, errno); }

int pidfd_open(pid_t pid) { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }
void pidfd_kill(int pidfd) { ::syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, nullptr, 0); }

int count_threads() {
  int n = 0;
  if (DIR* d = ::opendir("/proc/self/task")) {
    while (dirent* e = ::readdir(d))
      if (e->d_name[0] != '.') ++n;
    ::closedir(d);
  }
  return n;
}

struct Worker {
  pid_t pid;
  UniqueFd pidfd;
  UniqueFd status_write;
};

[[noreturn]] void run_worker(const StartRequest& request, pid_t server_pid, std::vector<UniqueFd>& passed) {
  for (int fd : *g_server_fds) ::close(fd);
  for (std::size_t i = 0; i < std::size(kServerSignals); ++i) ::sigaction(kServerSignals[i], &g_inherited[i], nullptr);
  run_start_request(request, server_pid, StartMethod::forkserver, passed);
}

ForkReply failed(const StartRequest& request, const std::string& error) { return ForkReply{request.id, 0, error}; }

// Forks the requested worker and sends the reply with its descriptors;
// returns the reply to send when it failed. Throws when the parent is gone.
// `passed`: the descriptors that came with the request, for the worker.
std::optional<ForkReply> serve_request(int socket, std::span<const std::byte> message, std::vector<UniqueFd>& passed,
                                       std::map<int, Worker>& workers) {
  StartRequest request;
  try {
    request = decode<StartRequest>(message);
  } catch (const std::exception& e) {
    return failed(request, std::string("bad fork request: ") + e.what());
  }
  if (auto why = unregistered_reason(request.function); !why.empty()) return failed(request, why);
  int status_pipe[2];
  if (::pipe2(status_pipe, O_CLOEXEC) < 0) return failed(request, std::string("pipe: ") + std::strerror(errno));
  UniqueFd status_read(status_pipe[0]), status_write(status_pipe[1]);

  pid_t server_pid = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) return failed(request, std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    status_read.reset();
    status_write.reset();
    run_worker(request, server_pid, passed);
  }
  passed.clear();  // the worker has its own copies
  UniqueFd pidfd(pidfd_open(pid));
  if (!pidfd) {
    int err = errno;
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    return failed(request, std::string("pidfd_open: ") + std::strerror(err));
  }
  // Tracked before the send: if the parent is gone, the worker is still reaped.
  g_server_fds->push_back(pidfd.get());
  g_server_fds->push_back(status_write.get());
  int key = pidfd.get();
  workers.emplace(key, Worker{pid, std::move(pidfd), std::move(status_write)});
  const int reply_fds[] = {key, status_read.get()};
  send_with_fds(socket, encode(ForkReply{request.id, pid, ""}), reply_fds);
  return std::nullopt;
}

void reap_worker(std::map<int, Worker>::iterator it, std::map<int, Worker>& workers) {
  siginfo_t info{};
  int rc;
  do rc = ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(it->first), &info, WEXITED | WNOHANG);
  while (rc < 0 && errno == EINTR);
  if (rc == 0 && info.si_pid == 0) return;  // not ended yet
  // rc < 0: not waitable (cannot happen: the server reaps its workers
  // itself); close the status pipe, which the parent reads as "killed".
  if (rc == 0) {
    int code = info.si_code == CLD_EXITED ? info.si_status : -info.si_status;
    [[maybe_unused]] auto n = ::write(it->second.status_write.get(), &code, sizeof code);
  }
  std::erase(*g_server_fds, it->second.pidfd.get());
  std::erase(*g_server_fds, it->second.status_write.get());
  workers.erase(it);
}

[[noreturn]] void server_main(UniqueFd socket) {
  g_server_fds = new std::vector<int>{socket.get()};
  std::map<int, Worker> workers;  // by pidfd
  std::vector<std::byte> buffer(kMaxStartRequestSize);
  for (;;) {
    std::vector<pollfd> fds{{socket.get(), POLLIN, 0}};
    for (auto& [fd, worker] : workers) fds.push_back({fd, POLLIN, 0});
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      ::_exit(1);
    }
    for (std::size_t i = 1; i < fds.size(); ++i) {
      if (fds[i].revents) reap_worker(workers.find(fds[i].fd), workers);
    }
    if (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) {
      std::vector<UniqueFd> passed;  // closed here whatever happens: the worker has its copies
      std::size_t n = 0;
      try {
        n = receive_with_fds(socket.get(), buffer, passed);
      } catch (const std::exception&) {
        n = 0;
      }
      if (n == 0) break;  // the parent is gone or has exited
      try {
        auto reply = serve_request(socket.get(), std::span(buffer.data(), n), passed, workers);
        if (reply) send_with_fds(socket.get(), encode(*reply), {});
      } catch (const std::exception&) {
        break;  // the parent is gone
      }
    }
  }
  // Parent gone: the remaining workers die with us (PR_SET_PDEATHSIG).
  ::_exit(0);
}

}  // namespace

StartRequest make_start_request(const ChildIdentity& who, const RemoteCall& call, const std::string& authkey) {
  StartRequest request;
  request.function = call.function;
  request.arguments.assign(reinterpret_cast<const char*>(call.arguments.data()), call.arguments.size());
  request.name = who.name;
  request.daemon = who.daemon;
  request.identity = who.identity;
  request.parent_name = who.parent.name;
  request.parent_pid = who.parent.pid;
  request.log_level = static_cast<int>(get_logger()->level());
  request.limits = who.limits;
  request.authkey = authkey;
  return request;
}

std::string unregistered_reason(const std::string& function) {
  if (functions().by_name.count(function)) return {};
  return "function '" + function + "' is not registered in this program (MPX_REGISTER_FUNCTION)";
}

void run_start_request(const StartRequest& request, pid_t expected_ppid, StartMethod method,
                       std::vector<UniqueFd>& passed) {
  ProcessInfo parent;
  parent.name = request.parent_name;
  parent.pid = request.parent_pid;
  ChildIdentity who{request.name, request.daemon, request.identity, parent, expected_ppid, method, request.limits};
  become_child(who);
  adopt_authkey(request.authkey);
  get_logger()->set_level(static_cast<spdlog::level::level_enum>(request.log_level));
  auto invoker = functions().by_name.at(request.function);
  std::span<const std::byte> arguments(reinterpret_cast<const std::byte*>(request.arguments.data()),
                                       request.arguments.size());
  run_child_and_exit([&] { invoker(arguments, passed); });
}

bool register_function(const char* name, void (*function)(), RemoteInvoker invoker) {
  auto& registry = functions();
  if (!registry.by_name.emplace(name, invoker).second) {
    get_logger()->error("MPX_REGISTER_FUNCTION: '{}' is registered twice; keeping the first", name);
    return false;
  }
  registry.by_address.emplace(function, name);
  return true;
}

std::optional<std::string> registered_name(void (*function)()) {
  auto& registry = functions();
  auto it = registry.by_address.find(function);
  if (it == registry.by_address.end()) return std::nullopt;
  return it->second;
}

namespace {

// Forgets the server: closes the socket and reaps the process (killing it
// first if it still runs), so that a dead server never stays a zombie.
void drop_server_locked(Client& c) {
  c.socket.reset();
  if (c.server_pidfd && c.owner == ::getpid()) {
    if (!wait_readable(c.server_pidfd.get(), std::chrono::seconds(5))) {  // closed its socket: it is exiting
      pidfd_kill(c.server_pidfd.get());
      wait_readable(c.server_pidfd.get(), std::chrono::seconds(5));
    }
    siginfo_t info{};
    int rc;
    do rc = ::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(c.server_pidfd.get()), &info,
                     WEXITED | WNOHANG);
    while (rc < 0 && errno == EINTR);
    // ECHILD: a host's SIGCHLD handler reaped it already.
  }
  c.server_pidfd.reset();
  c.server_pid = 0;
  c.owner = 0;
}

void start_server_locked(Client& c) {
  if (int threads = count_threads(); threads > 1) {
    get_logger()->warn(
        "starting the fork server from a process with {} threads; call set_start_method(forkserver) "
        "before creating threads so the server is forked from a single-threaded process",
        threads);
  }
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0) {
    throw_errno("starting the fork server (socketpair)");
  }
  UniqueFd ours(pair[0]), theirs(pair[1]);
  flush_std_streams();
  // SIGINT blocked across the fork, so that a Ctrl-C arriving before the
  // server ignores it stays pending (and is then discarded) instead of
  // killing it; the calling thread gets it once unblocked.
  sigset_t interrupt, previous;
  sigemptyset(&interrupt);
  sigaddset(&interrupt, SIGINT);
  ::pthread_sigmask(SIG_BLOCK, &interrupt, &previous);
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(0);
    (void)ours.release();
    ::close(pair[0]);
    // Ctrl-C is for the workers, not the server; a failed status write must
    // not kill it; and it reaps its workers itself (a host's SIGCHLD handler,
    // inherited, would take their exit status).
    struct sigaction ignore {}, fallback {};
    ignore.sa_handler = SIG_IGN;
    fallback.sa_handler = SIG_DFL;
    ::sigaction(SIGINT, &ignore, &g_inherited[0]);
    ::sigaction(SIGPIPE, &ignore, &g_inherited[1]);
    ::sigaction(SIGCHLD, &fallback, &g_inherited[2]);
    sigset_t none;
    sigemptyset(&none);
    ::pthread_sigmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGTERM, SIG_DFL);
    ::prctl(PR_SET_NAME, "mpx-forkserver");
    reset_logging_after_fork();
    server_main(std::move(theirs));
  }
  int fork_error = errno;
  ::pthread_sigmask(SIG_SETMASK, &previous, nullptr);
  if (pid < 0) throw ProcessOSError("starting the fork server (fork)", fork_error);
  UniqueFd pidfd(pidfd_open(pid));
  if (!pidfd) {
    int err = errno;
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    throw ProcessOSError("starting the fork server (pidfd_open)", err);
  }
  c.socket = std::move(ours);
  c.server_pidfd = std::move(pidfd);
  c.server_pid = pid;
  c.owner = parent;
}

// A running server, started or restarted as needed.
void ensure_running_locked(Client& c) {
  if (c.socket && c.owner == ::getpid()) {
    if (!wait_readable(c.server_pidfd.get(), std::chrono::seconds(0))) return;
    get_logger()->warn("the fork server (pid {}) has died; starting a new one", c.server_pid);
    drop_server_locked(c);
  }
  start_server_locked(c);
}

}  // namespace

void ensure_forkserver() {
  auto& c = client();
  std::lock_guard lock(c.mutex);
  ensure_running_locked(c);
}

void forkserver_died(pid_t server_pid) {
  auto& c = client();
  std::lock_guard lock(c.mutex);
  if (c.socket && c.owner == ::getpid() && c.server_pid == server_pid) drop_server_locked(c);
}

pid_t forkserver_pid() {
  auto& c = client();
  std::lock_guard lock(c.mutex);
  return c.socket && c.owner == ::getpid() ? c.server_pid : 0;
}

void set_forkserver_reply_timeout(std::chrono::milliseconds timeout) { g_reply_timeout_ms = timeout.count(); }

void close_forkserver_in_child() {
  // Single-threaded child: the mutex may be inherited locked (the fork
  // server itself is forked while it is held, and so are its workers), so
  // neither take it nor use it again: close the parent's descriptors and
  // start from a new client (the old one is abandoned, never destroyed).
  auto& old = client();
  old.socket.reset();
  old.server_pidfd.reset();
  client_slot() = new Client();
}

std::shared_ptr<ChildState> forkserver_start(const ChildIdentity& who, const RemoteCall& call,
                                             const std::string& authkey) {
  auto& c = client();
  std::lock_guard lock(c.mutex);
  StartRequest request = make_start_request(who, call, authkey);
  const std::string starting = "starting '" + who.name + "' with the fork server";
  // Sent to a live server; a server that died just before gets the request
  // once more, from a new server (the first never received it).
  for (int attempt = 0;; ++attempt) {
    ensure_running_locked(c);
    request.id = ++c.last_id;
    auto message = encode(request);
    if (message.size() > kMaxStartRequestSize) {
      throw ProcessError("forkserver arguments of '" + who.name + "' too large: " + std::to_string(message.size()) +
                         " bytes encoded, at most " + std::to_string(kMaxStartRequestSize));
    }
    try {
      send_with_fds(c.socket.get(), message, call.fds);
      break;
    } catch (const OSError& e) {
      if (attempt > 0 || (e.code() != EPIPE && e.code() != ECONNRESET)) throw ProcessOSError(starting, e.code());
      drop_server_locked(c);
    }
  }
  pid_t server = c.server_pid;
  auto deadline = Deadline::after(std::chrono::milliseconds(g_reply_timeout_ms.load()));
  for (;;) {
    std::vector<std::byte> buffer(4096);
    std::vector<UniqueFd> fds;
    std::optional<std::size_t> n = 0;
    try {
      n = receive_with_fds(c.socket.get(), buffer, fds, 2, deadline);  // the reply's pidfd and status pipe
    } catch (const OSError& e) {
      if (e.code() != ECONNRESET) throw ProcessOSError(starting, e.code());
    }
    if (!n) {
      throw ProcessError(starting + ": the fork server (pid " + std::to_string(server) + ") did not answer within " +
                         std::to_string(g_reply_timeout_ms.load()) + " ms");
    }
    if (*n == 0) {
      drop_server_locked(c);
      throw ProcessError(starting + ": the fork server (pid " + std::to_string(server) +
                         ") died before answering; the next start() starts a new one");
    }
    ForkReply reply;
    try {
      reply = decode<ForkReply>(std::span(buffer.data(), *n));
    } catch (const Error& e) {
      throw ProcessError(starting + ": unreadable reply: " + e.what());
    }
    if (reply.id != request.id && reply.id != 0) {
      // The late reply of a request that timed out: its caller has given up,
      // so its worker must not run unowned.
      if (!fds.empty()) pidfd_kill(fds[0].get());
      get_logger()->warn("discarded the late fork server reply to request {} (pid {})", reply.id, reply.pid);
      continue;
    }
    if (!reply.error.empty()) throw ProcessError("fork server could not start '" + who.name + "': " + reply.error);
    if (fds.size() != 2) throw ProcessError(starting + ": reply without descriptors");
    auto state = std::make_shared<ChildState>();
    state->pid = reply.pid;
    state->owner = ::getpid();
    state->pidfd = std::move(fds[0]);
    state->status_fd = std::move(fds[1]);
    state->server_pid = server;
    return state;
  }
}

}  // namespace mpx::detail
