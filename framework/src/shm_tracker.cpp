// The shared-memory tracker: see mpx/detail/shm_tracker.hpp for the contract
// and docs/shared-memory.md for the rule.
//
// The server half runs in a process forked from a possibly multi-threaded
// client, so it only makes system calls (no malloc, no stdio, no locks); its
// tables live in one anonymous mapping sized at start.
#include "mpx/detail/shm_tracker.hpp"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <atomic>
#include <chrono>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "mpx/detail/identity.hpp"
#include "mpx/logging.hpp"
#include "mpx/shared_memory.hpp"

namespace mpx::detail::shm_tracker {

namespace {

enum Op : std::uint32_t { op_created = 1, op_attached = 2, op_forget = 3, op_unlinked = 4, op_ping = 5 };

constexpr std::size_t kNameMax = 256;
struct Request {
  std::uint32_t op;
  std::uint32_t reserved;
  std::uint64_t dev;
  std::uint64_t ino;
  char object[kNameMax];  // with the leading '/', NUL-terminated
};
struct Reply {
  std::int32_t status;  // 0 or an errno value
  std::int32_t pid;     // the tracker's pid
};

// Where this user's tracker listens, and where it keeps its table. The
// optional MPX_SHM_TRACKER_TAG environment variable selects a separate
// tracker (tests use it to kill "their" tracker without disturbing others).
struct TrackerNames {
  sockaddr_un addr{};
  socklen_t addr_len = 0;
  char state_path[160] = {};
};

TrackerNames tracker_names() {
  TrackerNames n;
  std::string base = "mpx-shm-tracker-" + std::to_string(::getuid());
  if (const char* tag = std::getenv("MPX_SHM_TRACKER_TAG"); tag && *tag) base += std::string("-") + tag;
  if (base.size() > 90) base.resize(90);
  n.addr.sun_family = AF_UNIX;
  // Abstract namespace: no file to clean up, gone when the listener closes.
  std::memcpy(n.addr.sun_path + 1, base.data(), base.size());
  n.addr_len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + base.size());
  std::string path = "/dev/shm/." + base;  // hidden: not a segment anyone lists
  std::memcpy(n.state_path, path.data(), path.size());
  return n;
}

// ---------------------------------------------------------------- server

constexpr int kMaxClients = 1024;
constexpr int kMaxSegments = 4096;
constexpr int kWords = kMaxClients / 64;
constexpr int kLingerMs = 2000;  // stay this long after the last client left
constexpr int kTableLockAttempts = 20;  // a killed predecessor's lock may outlive its socket a moment:
constexpr int kTableLockPauseMs = 5;     // wait up to 100 ms for it before taking a private table
constexpr int kNoSpareBackoffMs = 100;  // out of descriptors with no spare: pause accepting
constexpr std::uint64_t kStateMagic = 0x32746b7274736d70;  // "pmstrkt2": start holds a task_marker

struct Segment {
  bool used;     // written last when a record is filled in
  bool tracked;  // created by an mpx process with Lifetime::tracked
  std::uint64_t dev, ino;
  std::uint64_t holders[kWords];  // one bit per client slot
  char object[kNameMax];
};
struct ClientIdentity {
  std::int32_t pid;  // the process that connected (0: free slot)
  std::uint32_t reserved;
  std::uint64_t start;  // its task_marker (identity.hpp: pidfs inode or start time; against pid reuse)
};
// Kept in a file-backed shared mapping: if the tracker is SIGKILLed, its
// successor reads it, watches the holders still alive and unlinks the
// segments whose holders are all gone.
struct Persisted {
  std::uint64_t magic;
  ClientIdentity clients[kMaxClients];
  Segment segments[kMaxSegments];
};
struct Runtime {
  int client_fd[kMaxClients];     // a connection, or a pidfd for a recovered holder
  bool is_pidfd[kMaxClients];
  pollfd fds[kMaxClients + 1];
  int slot_of_fd_index[kMaxClients + 1];
};
struct Server {
  Persisted* p;
  Runtime* rt;
  int clients;
};

// /proc/<pid>/stat: false when the process is gone or a zombie; *start gets
// its task_marker (0 when unknown). Only system calls: this runs in the tracker.
bool process_alive(pid_t pid, std::uint64_t* start) {
  char state = 0;
  std::uint64_t started = 0;
  if (!read_proc_stat(pid, state, started) || state == 'Z' || state == 'X') return false;
  *start = task_marker(pid);
  return true;
}

bool holders_empty(const Segment& s) {
  for (auto w : s.holders)
    if (w) return false;
  return true;
}

void unlink_segment(Segment& s) {
  if (s.tracked) {
    // Only unlink the object we were told about, not a namesake made since.
    char path[kNameMax + 16] = "/dev/shm";
    std::size_t len = std::strlen(path);
    std::size_t name_len = ::strnlen(s.object, kNameMax - 1);
    std::memcpy(path + len, s.object, name_len);
    path[len + name_len] = '\0';
    struct stat st {};
    bool same = ::stat(path, &st) == 0 && (s.ino == 0 || (st.st_ino == s.ino && st.st_dev == s.dev));
    if (same) ::shm_unlink(s.object);
  }
  s.used = false;
}

void release_holder(Segment& s, int slot) {
  s.holders[slot / 64] &= ~(std::uint64_t{1} << (slot % 64));
  if (holders_empty(s)) unlink_segment(s);
}

Segment* find_segment(Server& sv, const char* object) {
  for (auto& s : sv.p->segments)
    if (s.used && std::strncmp(s.object, object, kNameMax) == 0) return &s;
  return nullptr;
}

Segment* find_or_add(Server& sv, const char* object) {
  if (Segment* s = find_segment(sv, object)) return s;
  for (auto& s : sv.p->segments) {
    if (!s.used) {
      std::memset(&s, 0, sizeof s);
      std::memcpy(s.object, object, ::strnlen(object, kNameMax - 1));
      std::atomic_signal_fence(std::memory_order_seq_cst);  // the record before its flag
      s.used = true;
      return &s;
    }
  }
  return nullptr;
}

std::int32_t handle(Server& sv, int slot, Request& r) {
  r.object[kNameMax - 1] = '\0';
  switch (r.op) {
    case op_ping: return 0;
    case op_created:
    case op_attached: {
      Segment* s = find_or_add(sv, r.object);
      if (!s) return ENOSPC;
      if (r.op == op_created) {
        s->dev = r.dev;
        s->ino = r.ino;
        s->tracked = true;
      }
      s->holders[slot / 64] |= std::uint64_t{1} << (slot % 64);
      return 0;
    }
    case op_forget:
      if (Segment* s = find_segment(sv, r.object)) release_holder(*s, slot);
      return 0;
    case op_unlinked:
      if (Segment* s = find_segment(sv, r.object)) s->used = false;
      return 0;
    default: return EINVAL;
  }
}

// The slot's process(es) are gone: release what they held.
void drop_slot(Server& sv, int slot) {
  for (auto& s : sv.p->segments)
    if (s.used && (s.holders[slot / 64] & (std::uint64_t{1} << (slot % 64)))) release_holder(s, slot);
  sv.p->clients[slot] = ClientIdentity{};
  if (sv.rt->client_fd[slot] >= 0) {
    ::close(sv.rt->client_fd[slot]);
    sv.rt->client_fd[slot] = -1;
    --sv.clients;
  }
}

// Opens (or creates) the table file and locks it for this tracker's life;
// falls back to private memory, also when another live tracker holds the
// file. The socket is per network namespace and /dev/shm is not: a process
// in another namespace starts a tracker of its own, which must never read,
// truncate or write its neighbour's table (it would release, and unlink,
// segments that the neighbour's clients hold). `owned`: the file is ours.
Persisted* open_table(const char* path, bool& owned) {
  Persisted* table = nullptr;
  owned = false;
  int fd = ::open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  struct stat st {};
  // A predecessor that was just killed may hold the lock a moment longer.
  bool locked = false;
  for (int attempt = 0; fd >= 0 && !locked && attempt < kTableLockAttempts; ++attempt) {
    locked = ::flock(fd, LOCK_EX | LOCK_NB) == 0;
    if (!locked) {
      pollfd none{-1, 0, 0};
      ::poll(&none, 1, kTableLockPauseMs);
    }
  }
  if (fd >= 0 && (!locked || ::fstat(fd, &st) != 0 || st.st_uid != ::getuid())) {
    ::close(fd);
    fd = -1;
  }
  if (fd >= 0 && static_cast<std::size_t>(st.st_size) != sizeof(Persisted)) {
    if (::ftruncate(fd, 0) != 0 || ::ftruncate(fd, sizeof(Persisted)) != 0) {
      ::close(fd);
      fd = -1;
    }
  }
  if (fd >= 0) {
    void* mem = ::mmap(nullptr, sizeof(Persisted), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (mem != MAP_FAILED) {
      table = static_cast<Persisted*>(mem);
      owned = true;  // fd stays open: it holds the lock until this process ends
    } else {
      ::close(fd);
    }
  }
  if (!table) {
    void* mem = ::mmap(nullptr, sizeof(Persisted), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) ::_exit(1);
    table = static_cast<Persisted*>(mem);
  }
  if (table->magic != kStateMagic) {
    std::memset(table, 0, sizeof(Persisted));
    table->magic = kStateMagic;
  }
  return table;
}

// A predecessor was killed: keep watching its holders that still live (by
// pidfd: the connection is gone, their death is what matters), release the
// rest, and unlink what nobody holds.
void recover(Server& sv) {
  for (int slot = 0; slot < kMaxClients; ++slot) {
    ClientIdentity who = sv.p->clients[slot];
    if (who.pid == 0) continue;
    std::uint64_t start = 0;
    int pidfd = -1;
    if (process_alive(who.pid, &start) && start == who.start) {
      pidfd = static_cast<int>(::syscall(SYS_pidfd_open, who.pid, 0));
      // Re-check after opening: the pidfd now pins that very process.
      if (pidfd >= 0 && !(process_alive(who.pid, &start) && start == who.start)) {
        ::close(pidfd);
        pidfd = -1;
      }
    }
    if (pidfd >= 0) {
      sv.rt->client_fd[slot] = pidfd;
      sv.rt->is_pidfd[slot] = true;
      ++sv.clients;
    } else {
      drop_slot(sv, slot);
    }
  }
  for (auto& s : sv.p->segments)
    if (s.used && holders_empty(s)) unlink_segment(s);
}

// Turns a client away: its first reply carries `why` (the client reports it
// as SharedMemoryError), then the connection closes.
void refuse(int fd, int why, std::int32_t self) {
  if (fd < 0) return;
  Reply reply{why, self};
  ::send(fd, &reply, sizeof reply, MSG_NOSIGNAL | MSG_DONTWAIT);
  ::close(fd);
}

[[noreturn]] void serve(int listen_fd, const char* state_path) {
  // Detach from everything the spawner had: terminal signals, fds, cwd.
  struct sigaction ign {};
  ign.sa_handler = SIG_IGN;
  for (int sig : {SIGINT, SIGTERM, SIGHUP, SIGPIPE, SIGQUIT, SIGUSR1, SIGUSR2}) ::sigaction(sig, &ign, nullptr);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  if (listen_fd != 3) {
    ::dup3(listen_fd, 3, O_CLOEXEC);
    listen_fd = 3;
  }
  int devnull = ::open("/dev/null", O_RDWR);
  for (int fd = 0; fd < 3; ++fd)
    if (devnull >= 0 && devnull != fd) ::dup2(devnull, fd);
  ::syscall(SYS_close_range, 4u, ~0u, 0u);
  if (::chdir("/") != 0) { /* not fatal */ }
  // The starter's soft RLIMIT_NOFILE (often 1024, or lower) is no measure of
  // what the tracker needs: one descriptor per client, up to kMaxClients.
  rlimit nofile{};
  if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
    nofile.rlim_cur = nofile.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &nofile);
  }
  // Kept in reserve to accept-and-refuse a client when out of descriptors.
  int spare = ::open("/dev/null", O_RDONLY | O_CLOEXEC);

  void* mem = ::mmap(nullptr, sizeof(Runtime), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (mem == MAP_FAILED) ::_exit(1);
  bool owns_table = false;
  Server sv{open_table(state_path, owns_table), static_cast<Runtime*>(mem), 0};
  for (int& fd : sv.rt->client_fd) fd = -1;
  recover(sv);
  const uid_t uid = ::getuid();
  const std::int32_t self = static_cast<std::int32_t>(::syscall(SYS_getpid));

  for (;;) {
    int n = 0;
    sv.rt->fds[n] = {listen_fd, POLLIN, 0};
    sv.rt->slot_of_fd_index[n++] = -1;
    for (int slot = 0; slot < kMaxClients; ++slot) {
      if (sv.rt->client_fd[slot] < 0) continue;
      sv.rt->fds[n] = {sv.rt->client_fd[slot], POLLIN, 0};
      sv.rt->slot_of_fd_index[n++] = slot;
    }
    int ready = ::poll(sv.rt->fds, static_cast<nfds_t>(n), sv.clients == 0 ? kLingerMs : -1);
    if (ready < 0) {
      if (errno == EINTR) continue;
      ::_exit(2);
    }
    if (ready == 0 && sv.clients == 0) {
      // Nobody left: every tracked segment has been unlinked already. Remove
      // the table (if it is ours) while still listening: no successor can
      // have opened it.
      if (owns_table) ::unlink(state_path);
      ::close(listen_fd);
      ::_exit(0);
    }
    for (int i = 1; i < n; ++i) {
      if (!sv.rt->fds[i].revents) continue;
      int slot = sv.rt->slot_of_fd_index[i];
      if (sv.rt->is_pidfd[slot]) {  // a recovered holder ended
        drop_slot(sv, slot);
        sv.rt->is_pidfd[slot] = false;
        continue;
      }
      for (;;) {
        Request r{};
        ssize_t got = ::recv(sv.rt->client_fd[slot], &r, sizeof r, MSG_DONTWAIT);
        if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) break;
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) {  // EOF: every process holding this connection is gone
          drop_slot(sv, slot);
          break;
        }
        Reply reply{static_cast<std::int32_t>(got == sizeof r ? handle(sv, slot, r) : EINVAL), self};
        ::send(sv.rt->client_fd[slot], &reply, sizeof reply, MSG_NOSIGNAL | MSG_DONTWAIT);
      }
    }
    if (sv.rt->fds[0].revents & POLLIN) {
      int fd = ::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
      if (fd < 0 && (errno == EMFILE || errno == ENFILE)) {
        // Out of descriptors: the connection would stay queued and poll would
        // report it again at once (a spin). Take it with the spare and refuse.
        const int why = errno;
        if (spare >= 0) {
          ::close(spare);
          refuse(::accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC), why, self);
          spare = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
        } else {
          // No spare either (ENFILE took it): stop listening for a moment.
          pollfd none{-1, 0, 0};
          ::poll(&none, 1, kNoSpareBackoffMs);
        }
      } else if (fd >= 0) {
        ucred cred{};
        socklen_t len = sizeof cred;
        int slot = -1;
        const bool same_user = ::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && cred.uid == uid;
        if (same_user) {
          for (int s = 0; s < kMaxClients; ++s)
            if (sv.rt->client_fd[s] < 0) {
              slot = s;
              break;
            }
        }
        if (slot < 0) {
          refuse(fd, same_user ? EUSERS : EACCES, self);
        } else {
          std::uint64_t start = 0;
          if (!process_alive(cred.pid, &start)) start = 0;
          sv.p->clients[slot] = ClientIdentity{cred.pid, 0, start};
          sv.rt->client_fd[slot] = fd;
          ++sv.clients;
        }
      }
    }
  }
}

// Starts a tracker unless one is listening already. Returns without starting
// one when the address is taken (someone else started one: just connect).
void spawn_tracker(const TrackerNames& names) {
  int lfd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
  if (lfd < 0) throw SharedMemoryError(std::string("shm tracker: socket: ") + std::strerror(errno));
  if (::bind(lfd, reinterpret_cast<const sockaddr*>(&names.addr), names.addr_len) != 0) {
    int err = errno;
    ::close(lfd);
    if (err == EADDRINUSE) return;  // lost a race to another spawner
    throw SharedMemoryError(std::string("shm tracker: bind: ") + std::strerror(err));
  }
  if (::listen(lfd, 128) != 0) {
    int err = errno;
    ::close(lfd);
    throw SharedMemoryError(std::string("shm tracker: listen: ") + std::strerror(err));
  }
  // Double fork: the tracker is nobody's child in the user's tree (no zombie,
  // not in its process group or session), so killing the tree spares it.
  pid_t pid = ::fork();
  if (pid < 0) {
    int err = errno;
    ::close(lfd);
    throw SharedMemoryError(std::string("shm tracker: fork: ") + std::strerror(err));
  }
  if (pid == 0) {
    ::setsid();
    pid_t grandchild = ::fork();
    if (grandchild != 0) ::_exit(grandchild < 0 ? 1 : 0);
    serve(lfd, names.state_path);
  }
  ::close(lfd);  // the socket listens on in the tracker
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
}

// ---------------------------------------------------------------- client

using Clock = std::chrono::steady_clock;

std::atomic<std::int64_t> reply_timeout_ms{10'000};

Clock::time_point deadline_from_now() {
  return Clock::now() + std::chrono::milliseconds(reply_timeout_ms.load(std::memory_order_relaxed));
}

struct Client {
  std::mutex mu;
  int fd = -1;
  pid_t owner = 0;                  // the process that opened fd
  pid_t tracker = 0;                // its pid, from the last reply
  int stale = 0;                    // replies still due on fd to requests that timed out
  std::vector<Request> registered;  // this process' own registrations, replayed on reconnect
};

Client& client() {
  static Client* c = [] {
    auto* made = new Client;  // never destroyed: usable from atexit handlers and late destructors
    ::pthread_atfork(nullptr, nullptr, [] {
      // In the child: the parent's connection stays open (it keeps the
      // parent's registrations alive while we live) but is never used here.
      Client& me = client();
      new (&me.mu) std::mutex;
      me.fd = -1;
      me.owner = 0;
      me.tracker = 0;
      me.stale = 0;
      new (&me.registered) std::vector<Request>();  // the old one may be mid-update: leak it
    });
    return made;
  }();
  return *c;
}

[[noreturn]] void throw_timeout(pid_t tracker) {
  throw SharedMemoryError("shm tracker" + (tracker > 0 ? " (pid " + std::to_string(tracker) + ")" : std::string()) +
                          " did not answer within " + std::to_string(reply_timeout_ms.load()) +
                          " ms (stopped or overloaded?)");
}

// Waits until `fd` is ready for `events`; false when `deadline` passed first.
bool wait_ready(int fd, short events, Clock::time_point deadline) {
  for (;;) {
    auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
    pollfd p{fd, events, 0};
    int rc = ::poll(&p, 1, static_cast<int>(std::clamp<decltype(left)>(left, 0, 60'000)));
    if (rc > 0) return true;  // readiness, or an error/hangup the next call reports
    if (rc == 0 && left <= 0) return false;
    if (rc < 0 && errno != EINTR) return true;
  }
}

enum class Outcome { ok, closed, timed_out };

// Reads the reply to our request, discarding `stale` replies to earlier
// requests that timed out (the tracker answers each request once, in order).
// With `wait` false only what is queued already is read.
Outcome receive(int fd, Reply& reply, int& stale, bool wait, Clock::time_point deadline) {
  for (;;) {
    if (wait && !wait_ready(fd, POLLIN, deadline)) return Outcome::timed_out;
    ssize_t got = ::recv(fd, &reply, sizeof reply, MSG_DONTWAIT);
    if (got == static_cast<ssize_t>(sizeof reply)) {
      if (stale == 0) return Outcome::ok;
      --stale;
      continue;
    }
    // ECONNRESET: the tracker closed with our request unread (a refusal); it
    // is reported once, before the reply still queued.
    if (got < 0 && (errno == EINTR || errno == ECONNRESET)) continue;
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) && wait) continue;
    return Outcome::closed;
  }
}

// One request and its reply, bounded by `deadline`. A request that timed out
// after it was sent leaves a reply due: `stale` counts it for the next call.
Outcome exchange(int fd, const Request& r, Reply& reply, int& stale, Clock::time_point deadline) {
  for (;;) {
    ssize_t sent = ::send(fd, &r, sizeof r, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (sent == static_cast<ssize_t>(sizeof r)) break;
    if (sent < 0 && errno == EINTR) continue;
    if (sent < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!wait_ready(fd, POLLOUT, deadline)) return Outcome::timed_out;
      continue;
    }
    // The tracker closed the connection; a refusal (see refuse()) may be queued.
    return receive(fd, reply, stale, false, deadline);
  }
  Outcome got = receive(fd, reply, stale, true, deadline);
  if (got == Outcome::timed_out) ++stale;
  return got;
}

// Why the tracker turned us away (its reply to our first request).
std::string refusal_reason(int status) {
  switch (status) {
    case EMFILE:
    case ENFILE: return "it is out of file descriptors";
    case EUSERS: return "it serves " + std::to_string(kMaxClients) + " processes already";
    case EACCES: return "this process' user differs from its user";
    default: return std::strerror(status);
  }
}

// Opens this process' connection; spawns the tracker when `spawn` and none
// runs. Returns false when no tracker runs and `spawn` is false. Throws
// SharedMemoryError when the tracker refuses us or does not answer by `deadline`.
bool connect_locked(Client& c, bool spawn, Clock::time_point deadline) {
  if (c.owner == current_pid() && c.fd >= 0) return true;
  c.fd = -1;  // an inherited connection is left open on purpose (see above)
  c.stale = 0;
  c.registered.clear();
  const TrackerNames names = tracker_names();
  for (int attempt = 0; attempt < 50; ++attempt) {
    // Non-blocking: connect would otherwise block on a full listen queue.
    int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) throw SharedMemoryError(std::string("shm tracker: socket: ") + std::strerror(errno));
    if (::connect(fd, reinterpret_cast<const sockaddr*>(&names.addr), names.addr_len) == 0) {
      Request ping{};
      ping.op = op_ping;
      Reply reply{};
      int stale = 0;
      Outcome got = exchange(fd, ping, reply, stale, deadline);
      if (got == Outcome::ok && reply.status == 0) {
        c.fd = fd;
        c.owner = current_pid();
        c.tracker = reply.pid;
        return true;
      }
      ::close(fd);
      if (got == Outcome::timed_out) throw_timeout(0);
      if (got == Outcome::ok) {
        int status = reply.status;
        if (status == EMFILE || status == ENFILE) {
          static std::atomic<bool> logged{false};  // once per process: the exception says it each time
          if (!logged.exchange(true))
            get_logger()->warn("the shared-memory tracker (pid {}) is out of file descriptors and refuses clients",
                               reply.pid);
        }
        throw SharedMemoryError("shm tracker (pid " + std::to_string(reply.pid) +
                                ") refused this process: " + refusal_reason(status));
      }
      ::usleep(1000);  // the tracker was exiting: try again
      continue;
    }
    int err = errno;
    ::close(fd);
    if (err == EAGAIN) {  // its listen queue is full
      if (Clock::now() >= deadline) throw_timeout(0);
      ::usleep(1000);
      --attempt;  // bounded by the deadline, not by the attempts
      continue;
    }
    if (err != ECONNREFUSED && err != ENOENT)
      throw SharedMemoryError(std::string("shm tracker: connect: ") + std::strerror(err));
    if (!spawn) return false;
    spawn_tracker(names);
  }
  throw SharedMemoryError("shm tracker: could not reach or start the tracker");
}

// Sends `r`; on a broken connection (tracker killed) reconnects, replays
// this process' registrations and retries once. Throws SharedMemoryError when
// the tracker does not answer within the reply timeout.
std::int32_t request_locked(Client& c, const Request& r, bool spawn,
                            Clock::time_point deadline = deadline_from_now()) {
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (!connect_locked(c, spawn || !c.registered.empty(), deadline)) return 0;
    Reply reply{};
    Outcome got = exchange(c.fd, r, reply, c.stale, deadline);
    if (got == Outcome::timed_out) throw_timeout(c.tracker);
    if (got == Outcome::ok) {
      c.tracker = reply.pid;
      return reply.status;
    }
    ::close(c.fd);
    c.fd = -1;
    auto replay = std::move(c.registered);
    if (!connect_locked(c, true, deadline)) return ESRCH;
    for (auto& old : replay) {
      got = exchange(c.fd, old, reply, c.stale, deadline);
      if (got == Outcome::timed_out) throw_timeout(c.tracker);
      if (got == Outcome::ok && reply.status == 0) c.registered.push_back(old);
    }
  }
  return EPIPE;
}

Request make_request(Op op, const std::string& object, std::uint64_t dev = 0, std::uint64_t ino = 0) {
  Request r{};
  r.op = op;
  r.dev = dev;
  r.ino = ino;
  std::size_t n = object.size() < kNameMax - 1 ? object.size() : kNameMax - 1;
  std::memcpy(r.object, object.data(), n);
  return r;
}

bool is_registered(const Client& c, const std::string& object) {
  return std::any_of(c.registered.begin(), c.registered.end(), [&](const Request& r) { return object == r.object; });
}

void remove_registrations(Client& c, const std::string& object, bool attached_only) {
  std::erase_if(c.registered, [&](const Request& r) {
    return object == r.object && (!attached_only || r.op == op_attached);
  });
}

}  // namespace

void register_created(const std::string& object, dev_t dev, ino_t ino) {
  Client& c = client();
  std::lock_guard lock(c.mu);
  Request r = make_request(op_created, object, dev, ino);
  std::int32_t status = request_locked(c, r, true);
  if (status != 0)
    throw SharedMemoryError("shm tracker: cannot track '" + object + "': " + std::strerror(status));
  c.registered.push_back(r);
}

void register_attached(const std::string& object) noexcept {
  try {
    Client& c = client();
    std::lock_guard lock(c.mu);
    Request r = make_request(op_attached, object);
    // The tracker keeps one holder mark per connection: a second registration
    // of the same object by this process is only counted here.
    if (c.owner == current_pid() && c.fd >= 0 && is_registered(c, object)) {
      c.registered.push_back(r);
      return;
    }
    if (request_locked(c, r, false) == 0 && c.fd >= 0) c.registered.push_back(r);
  } catch (...) {
    // Attaching works without a tracker; the segment is then just not protected by us.
  }
}

void forget(const std::string& object) noexcept {
  try {
    Client& c = client();
    std::lock_guard lock(c.mu);
    if (c.owner != current_pid() || c.fd < 0) return;
    auto it = std::find_if(c.registered.begin(), c.registered.end(),
                           [&](const Request& r) { return object == r.object && r.op == op_attached; });
    if (it == c.registered.end()) return;
    c.registered.erase(it);
    if (!is_registered(c, object)) (void)request_locked(c, make_request(op_forget, object), false);
  } catch (...) {
  }
}

void unlinked(const std::string& object) noexcept {
  try {
    Client& c = client();
    std::lock_guard lock(c.mu);
    remove_registrations(c, object, false);
    const auto deadline = deadline_from_now();
    if (c.owner != current_pid() || c.fd < 0) {
      // No connection of our own: tell the tracker anyway if it runs, so it
      // does not later unlink a namesake created after this unlink.
      if (!connect_locked(c, false, deadline)) return;
    }
    (void)request_locked(c, make_request(op_unlinked, object), false, deadline);
  } catch (...) {
  }
}

pid_t tracker_pid() noexcept {
  try {
    Client& c = client();
    std::lock_guard lock(c.mu);
    const auto deadline = deadline_from_now();
    if (!connect_locked(c, false, deadline)) return 0;
    Reply reply{};
    Request ping{};
    ping.op = op_ping;
    if (exchange(c.fd, ping, reply, c.stale, deadline) != Outcome::ok) return 0;
    return reply.pid;
  } catch (...) {
    return 0;
  }
}

void set_reply_timeout(std::chrono::milliseconds timeout) noexcept {
  reply_timeout_ms.store(std::max<std::int64_t>(timeout.count(), 1), std::memory_order_relaxed);
}

}  // namespace mpx::detail::shm_tracker
