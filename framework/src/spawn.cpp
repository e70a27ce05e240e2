// The spawn start method: the child is a fresh image of this program
// (posix_spawn of /proc/self/exe with the parent's argv and environment),
// which takes over in mpx::freeze_support() at the top of main, before
// main's own work: it reads its StartRequest, with the descriptors of the
// primitives among the arguments (SCM_RIGHTS), from a socket it inherits as
// the descriptor named by MPX_SPAWN_FD, runs the registered function and
// exits. Nothing of the parent's memory is shared or copied, and starting
// costs the same whatever the parent's heap (posix_spawn uses vfork).
//
// The parent is the child's real parent: it waits through a pidfd, as for
// fork children. The request is sent after posix_spawn returns; it waits in
// the socket until the child reads it, so start() does not wait for the new
// image to load. A child that gets no request within the reply timeout
// (a parent killed between the spawn and the send) logs it and exits 1.
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <charconv>
#include <cstring>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "mpx/detail/fd_passing.hpp"
#include "mpx/logging.hpp"
#include "mpx/sync_error.hpp"
#include "start_request.hpp"

extern char** environ;

namespace mpx {

namespace {

constexpr const char* kSpawnFdVariable = "MPX_SPAWN_FD";
constexpr std::chrono::milliseconds kRequestTimeout{60'000};
std::atomic<bool> g_freeze_support_called{false};

// argv of this process, as the kernel has it (NUL-separated).
std::vector<std::string> own_arguments() {
  std::ifstream in("/proc/self/cmdline", std::ios::binary);
  std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> arguments;
  std::size_t start = 0;
  while (start < all.size()) {
    std::size_t end = all.find('\0', start);
    if (end == std::string::npos) end = all.size();
    arguments.push_back(all.substr(start, end - start));
    start = end + 1;
  }
  if (arguments.empty()) arguments.emplace_back("mpx-spawn");
  return arguments;
}

// The environment of this process with MPX_SPAWN_FD=`fd` in place of any
// inherited one.
std::vector<std::string> child_environment(int fd) {
  const std::string prefix = std::string(kSpawnFdVariable) + "=";
  std::vector<std::string> environment;
  for (char** entry = environ; entry && *entry; ++entry) {
    if (std::strncmp(*entry, prefix.c_str(), prefix.size()) != 0) environment.emplace_back(*entry);
  }
  environment.push_back(prefix + std::to_string(fd));
  return environment;
}

std::vector<char*> pointers_to(std::vector<std::string>& strings) {
  std::vector<char*> pointers;
  for (auto& s : strings) pointers.push_back(s.data());
  pointers.push_back(nullptr);
  return pointers;
}

// posix_spawn's attribute and file-action objects, destroyed in any case.
struct SpawnSetup {
  posix_spawnattr_t attributes;
  posix_spawn_file_actions_t actions;
  SpawnSetup() {
    ::posix_spawnattr_init(&attributes);
    ::posix_spawn_file_actions_init(&actions);
  }
  ~SpawnSetup() {
    ::posix_spawn_file_actions_destroy(&actions);
    ::posix_spawnattr_destroy(&attributes);
  }
  SpawnSetup(const SpawnSetup&) = delete;
  SpawnSetup& operator=(const SpawnSetup&) = delete;
};

[[noreturn]] void child_gives_up(const std::string& why) {
  get_logger()->error("spawned process (pid {}) cannot start: {}; exiting", ::getpid(), why);
  detail::flush_std_streams();
  ::_exit(1);
}

}  // namespace

void freeze_support() {
  g_freeze_support_called.store(true, std::memory_order_relaxed);
  const char* value = std::getenv(kSpawnFdVariable);
  if (!value) return;  // not a spawned child: main goes on
  int fd = -1;
  const char* end = value + std::strlen(value);
  if (std::from_chars(value, end, fd).ptr != end || fd < 0) child_gives_up("bad MPX_SPAWN_FD");
  ::unsetenv(kSpawnFdVariable);  // its own children must not take it for theirs
  detail::UniqueFd socket(fd);
  ::fcntl(fd, F_SETFD, FD_CLOEXEC);

  std::vector<std::byte> buffer(detail::kMaxStartRequestSize);
  std::vector<detail::UniqueFd> passed;
  std::size_t n = 0;
  try {
    // The parent sends right after posix_spawn returns; its death closes the
    // socket (EOF below). Only a stopped parent could keep us waiting here.
    if (!detail::wait_readable(fd, kRequestTimeout)) child_gives_up("no start request from the parent within 60 s");
    n = detail::receive_with_fds(fd, buffer, passed);
  } catch (const std::exception& e) {
    child_gives_up(std::string("reading the start request: ") + e.what());
  }
  if (n == 0) child_gives_up("the parent closed the start socket without a request");
  detail::StartRequest request;
  try {
    request = decode<detail::StartRequest>(std::span(buffer.data(), n));
  } catch (const std::exception& e) {
    child_gives_up(std::string("bad start request: ") + e.what());
  }
  socket.reset();
  if (auto why = detail::unregistered_reason(request.function); !why.empty()) child_gives_up(why);
  detail::run_start_request(request, request.parent_pid, StartMethod::spawn, passed);
}

namespace detail {

std::shared_ptr<ChildState> spawn_start(const ChildIdentity& who, const RemoteCall& call, const std::string& authkey) {
  const std::string starting = "starting '" + who.name + "' with the spawn start method";
  if (!g_freeze_support_called.load(std::memory_order_relaxed)) {
    throw ProcessError(starting + ": this program's main() does not call mpx::freeze_support() first; the spawned "
                                  "child is a new run of this program and takes over there");
  }
  auto message = encode(make_start_request(who, call, authkey));
  if (message.size() > kMaxStartRequestSize) {
    throw ProcessError(starting + ": arguments too large: " + std::to_string(message.size()) +
                       " bytes encoded, at most " + std::to_string(kMaxStartRequestSize));
  }
  int pair[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, pair) < 0)
    throw ProcessOSError(starting + " (socketpair)", errno);
  UniqueFd ours(pair[0]), theirs(pair[1]);

  auto arguments = own_arguments();
  auto environment = child_environment(theirs.get());
  auto argv = pointers_to(arguments);
  auto envp = pointers_to(environment);
  SpawnSetup setup;
  // dup2 onto itself clears close-on-exec for the child only.
  if (int rc = ::posix_spawn_file_actions_adddup2(&setup.actions, theirs.get(), theirs.get()); rc != 0)
    throw ProcessOSError(starting + " (posix_spawn_file_actions_adddup2)", rc);
  sigset_t none;
  sigemptyset(&none);
  ::posix_spawnattr_setsigmask(&setup.attributes, &none);
  ::posix_spawnattr_setflags(&setup.attributes, POSIX_SPAWN_SETSIGMASK);
  flush_std_streams();
  pid_t pid = 0;
  if (int rc = ::posix_spawn(&pid, "/proc/self/exe", &setup.actions, &setup.attributes, argv.data(), envp.data());
      rc != 0)
    throw ProcessOSError(starting + " (posix_spawn)", rc);
  theirs.reset();
  auto state = watch_direct_child(pid, who.name);
  try {
    send_with_fds(ours.get(), message, call.fds);
  } catch (const OSError& e) {
    // EPIPE: it died before reading (its exit code says how); anything else
    // leaves it without its request: it must not run unowned.
    if (e.code() != EPIPE && e.code() != ECONNRESET) {
      ProcessHandle child(state);
      child.kill();
      child.join();
      throw ProcessOSError(starting + " (sending the request)", e.code());
    }
  }
  return state;
}

}  // namespace detail

}  // namespace mpx
