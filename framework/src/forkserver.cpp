// The fork server: a single-threaded helper, forked from the main process
// when set_start_method(StartMethod::forkserver) is called, that forks the
// workers on request so that a multi-threaded parent never forks itself.
//
// Protocol, over a SOCK_SEQPACKET socketpair (one datagram per message):
//   parent -> server  ForkRequest (encoded with mpx::encode)
//   server -> parent  ForkReply, with SCM_RIGHTS [pidfd, status pipe read end]
// The server reaps each worker and writes its exit code (an int) into the
// worker's status pipe; the parent's join() waits on that pipe. The server
// dies with its parent (PR_SET_PDEATHSIG), and the workers with the server.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cereal/types/string.hpp>
#include <cereal/types/vector.hpp>
#include <cstring>
#include <dirent.h>
#include <map>
#include <mutex>
#include <system_error>

#include "mpx/detail/deadline.hpp"
#include "mpx/logging.hpp"
#include "process_runtime.hpp"

namespace mpx::detail {

namespace {

constexpr std::size_t kMaxRequestSize = 160 * 1024;
constexpr auto kReplyTimeout = std::chrono::seconds(30);

struct ForkRequest {
  std::string function;
  std::string arguments;  // encoded argument tuple
  std::string name;
  bool daemon = false;
  std::vector<int> identity;
  std::string parent_name;
  int parent_pid = 0;
  int log_level = 0;

  template <class Archive>
  void serialize(Archive& ar) {
    ar(function, arguments, name, daemon, identity, parent_name, parent_pid, log_level);
  }
};

struct ForkReply {
  int pid = 0;
  std::string error;  // empty on success

  template <class Archive>
  void serialize(Archive& ar) {
    ar(pid, error);
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
  std::mutex mutex;  // one request/reply exchange at a time
  UniqueFd socket;
  pid_t server_pid = 0;
  pid_t owner = 0;
};
Client& client() {
  static Client* c = new Client();  // never destroyed: used from the atexit handler
  return *c;
}

// In the server: descriptors a worker must not inherit.
std::vector<int>* g_server_fds = nullptr;

[[noreturn]] void throw_errno(const char* what) { throw std::system_error(errno, std::generic_category(), what); }

void send_with_fds(int socket, std::span<const std::byte> data, std::initializer_list<int> fds) {
  iovec iov{const_cast<std::byte*>(data.data()), data.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 2)]{};
  if (fds.size() > 0) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(cmsg), fds.begin(), sizeof(int) * fds.size());
  }
  ssize_t n;
  do n = ::sendmsg(socket, &msg, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n < 0) throw_errno("fork server sendmsg");
}

// Receives one datagram; fills up to two received descriptors. Returns the
// number of bytes, 0 on EOF.
std::size_t receive_with_fds(int socket, std::vector<std::byte>& buffer, UniqueFd (&fds)[2]) {
  iovec iov{buffer.data(), buffer.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 2)]{};
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do n = ::recvmsg(socket, &msg, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0) throw_errno("fork server recvmsg");
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
      std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      int received[2] = {-1, -1};
      std::memcpy(received, CMSG_DATA(c), sizeof(int) * std::min<std::size_t>(count, 2));
      for (std::size_t i = 0; i < std::min<std::size_t>(count, 2); ++i) fds[i].reset(received[i]);
    }
  }
  if (msg.msg_flags & MSG_TRUNC) throw ProcessError("fork server message truncated");
  return static_cast<std::size_t>(n);
}

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

[[noreturn]] void run_worker(const ForkRequest& request, pid_t server_pid) {
  for (int fd : *g_server_fds) ::close(fd);
  ChildIdentity who{request.name, request.daemon, request.identity,
                    ProcessInfo{request.parent_name, request.parent_pid, false}, server_pid};
  become_child(who);
  get_logger()->set_level(static_cast<spdlog::level::level_enum>(request.log_level));
  auto invoker = functions().by_name.at(request.function);
  std::span<const std::byte> arguments(reinterpret_cast<const std::byte*>(request.arguments.data()),
                                       request.arguments.size());
  run_child_and_exit([&] { invoker(arguments); });
}

ForkReply serve_request(int socket, std::span<const std::byte> message, std::map<int, Worker>& workers) {
  ForkRequest request;
  try {
    request = decode<ForkRequest>(message);
  } catch (const std::exception& e) {
    return ForkReply{0, std::string("bad fork request: ") + e.what()};
  }
  if (!functions().by_name.count(request.function)) {
    return ForkReply{0, "function '" + request.function + "' is not registered in the fork server"};
  }
  int status_pipe[2];
  if (::pipe2(status_pipe, O_CLOEXEC) < 0) return ForkReply{0, std::string("pipe: ") + std::strerror(errno)};
  UniqueFd status_read(status_pipe[0]), status_write(status_pipe[1]);

  pid_t server_pid = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) return ForkReply{0, std::string("fork: ") + std::strerror(errno)};
  if (pid == 0) {
    status_read.reset();
    status_write.reset();
    run_worker(request, server_pid);
  }
  UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (!pidfd) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
    return ForkReply{pid, std::string("pidfd_open: ") + std::strerror(errno)};
  }
  auto reply = encode(ForkReply{pid, ""});
  send_with_fds(socket, reply, {pidfd.get(), status_read.get()});
  g_server_fds->push_back(pidfd.get());
  g_server_fds->push_back(status_write.get());
  int key = pidfd.get();
  workers.emplace(key, Worker{pid, std::move(pidfd), std::move(status_write)});
  return ForkReply{pid, ""};  // already sent
}

void reap_worker(std::map<int, Worker>::iterator it, std::map<int, Worker>& workers) {
  siginfo_t info{};
  if (::waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(it->first), &info, WEXITED | WNOHANG) < 0 ||
      info.si_pid == 0) {
    return;
  }
  int code = info.si_code == CLD_EXITED ? info.si_status : -info.si_status;
  [[maybe_unused]] auto n = ::write(it->second.status_write.get(), &code, sizeof code);
  std::erase(*g_server_fds, it->second.pidfd.get());
  std::erase(*g_server_fds, it->second.status_write.get());
  workers.erase(it);
}

[[noreturn]] void server_main(UniqueFd socket) {
  g_server_fds = new std::vector<int>{socket.get()};
  std::map<int, Worker> workers;  // by pidfd
  std::vector<std::byte> buffer(kMaxRequestSize);
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
      UniqueFd unused[2];
      std::size_t n = 0;
      try {
        n = receive_with_fds(socket.get(), buffer, unused);
      } catch (const std::exception&) {
        n = 0;
      }
      if (n == 0) break;  // the parent is gone or has exited
      auto reply = serve_request(socket.get(), std::span(buffer.data(), n), workers);
      if (!reply.error.empty()) send_with_fds(socket.get(), encode(reply), {});
    }
  }
  // Parent gone: the remaining workers die with us (PR_SET_PDEATHSIG).
  ::_exit(0);
}

}  // namespace

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

void ensure_forkserver() {
  auto& c = client();
  std::lock_guard lock(c.mutex);
  if (c.socket && c.owner == ::getpid()) return;
  if (int threads = count_threads(); threads > 1) {
    get_logger()->warn(
        "starting the fork server from a process with {} threads; call set_start_method(forkserver) "
        "before creating threads so the server is forked from a single-threaded process",
        threads);
  }
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0) throw_errno("socketpair");
  UniqueFd ours(pair[0]), theirs(pair[1]);
  flush_std_streams();
  pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) throw_errno("fork (fork server)");
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(0);
    (void)ours.release();
    ::close(pair[0]);
    sigset_t none;
    sigemptyset(&none);
    ::pthread_sigmask(SIG_SETMASK, &none, nullptr);
    ::signal(SIGTERM, SIG_DFL);
    ::prctl(PR_SET_NAME, "mpx-forkserver");
    reset_logging_after_fork();
    server_main(std::move(theirs));
  }
  c.socket = std::move(ours);
  c.server_pid = pid;
  c.owner = parent;
}

void close_forkserver_in_child() {
  auto& c = client();
  // Single-threaded child: the mutex may be inherited locked, so do not take it.
  c.socket.reset();
  c.server_pid = 0;
  c.owner = 0;
}

std::shared_ptr<ChildState> forkserver_start(const ChildIdentity& who, const RemoteCall& call) {
  ensure_forkserver();
  auto& c = client();
  std::lock_guard lock(c.mutex);
  ForkRequest request{call.function,
                      std::string(reinterpret_cast<const char*>(call.arguments.data()), call.arguments.size()),
                      who.name,
                      who.daemon,
                      who.identity,
                      who.parent.name,
                      who.parent.pid,
                      static_cast<int>(get_logger()->level())};
  auto message = encode(request);
  if (message.size() > kMaxRequestSize) {
    throw ProcessError("forkserver arguments of '" + who.name + "' too large: " + std::to_string(message.size()) +
                       " bytes encoded, at most " + std::to_string(kMaxRequestSize));
  }
  send_with_fds(c.socket.get(), message, {});

  pollfd p{c.socket.get(), POLLIN, 0};
  int ready;
  do ready = ::poll(&p, 1, static_cast<int>(std::chrono::milliseconds(kReplyTimeout).count()));
  while (ready < 0 && errno == EINTR);
  if (ready <= 0) throw ProcessError("fork server did not answer within 30 s");
  std::vector<std::byte> buffer(4096);
  UniqueFd fds[2];
  std::size_t n = receive_with_fds(c.socket.get(), buffer, fds);
  if (n == 0) throw ProcessError("fork server has exited");
  auto reply = decode<ForkReply>(std::span(buffer.data(), n));
  if (!reply.error.empty()) throw ProcessError("fork server could not start '" + who.name + "': " + reply.error);
  if (!fds[0] || !fds[1]) throw ProcessError("fork server reply without descriptors");
  auto state = std::make_shared<ChildState>();
  state->pid = reply.pid;
  state->owner = ::getpid();
  state->pidfd = std::move(fds[0]);
  state->status_fd = std::move(fds[1]);
  return state;
}

}  // namespace mpx::detail
