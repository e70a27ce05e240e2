#include "mpx/detail/identity.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>

namespace mpx::detail {

namespace {

std::atomic<pid_t> g_pid{0};
thread_local pid_t t_tid = 0;
thread_local std::uint64_t t_ident = 0;
std::atomic<std::uint64_t> g_ident{0};

void refresh_after_fork() noexcept {
  // Runs in the child of fork(), in the only thread there is.
  g_pid.store(static_cast<pid_t>(::syscall(SYS_getpid)), std::memory_order_relaxed);
  t_tid = 0;
  t_ident = 0;
  g_ident.store(0, std::memory_order_relaxed);
}

void register_atfork() noexcept {
  static std::atomic<bool> done{false};
  bool expected = false;
  if (done.compare_exchange_strong(expected, true)) ::pthread_atfork(nullptr, nullptr, &refresh_after_fork);
}

}  // namespace

bool read_proc_stat(pid_t tid, char& state, std::uint64_t& start) noexcept {
  // The path by hand, not snprintf: only system calls and string functions.
  char path[32] = "/proc/";
  char digits[16];
  int n = 0;
  auto v = static_cast<unsigned>(tid);
  do {
    digits[n++] = static_cast<char>('0' + v % 10);
    v /= 10;
  } while (v);
  std::size_t at = 6;
  while (n) path[at++] = digits[--n];
  std::memcpy(path + at, "/stat", 6);
  int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  char buf[1024];
  ssize_t got = ::read(fd, buf, sizeof buf - 1);
  ::close(fd);
  if (got <= 0) return false;
  buf[got] = '\0';
  // The command name may contain spaces and parentheses: parse after the last ')'.
  char* p = std::strrchr(buf, ')');
  if (!p || p[1] != ' ') return false;
  p += 2;
  state = *p;
  // Fields after the name start at field 3 (state); starttime is field 22.
  for (int field = 3; field < 22; ++field) {
    p = std::strchr(p, ' ');
    if (!p) return false;
    ++p;
  }
  std::uint64_t value = 0;
  while (*p >= '0' && *p <= '9') value = value * 10 + static_cast<std::uint64_t>(*p++ - '0');
  start = value;
  return true;
}

namespace {
constexpr std::uint64_t kPidfsTag = std::uint64_t{1} << 63;
constexpr unsigned long kPidfsMagic = 0x50494446;  // PID_FS_MAGIC
constexpr unsigned kPidfdThread = O_EXCL;          // PIDFD_THREAD (Linux 6.9)

// The pidfs inode of `tid`, 0 when there is none (older kernel, gone, no descriptor).
std::uint64_t pidfs_inode(pid_t tid) noexcept {
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, tid, kPidfdThread));
  if (fd < 0) return 0;
  struct statfs fs {};
  struct stat st {};
  bool ok = ::fstatfs(fd, &fs) == 0 && static_cast<unsigned long>(fs.f_type) == kPidfsMagic && ::fstat(fd, &st) == 0;
  ::close(fd);
  return ok ? static_cast<std::uint64_t>(st.st_ino) : 0;
}

// The low half of an ident: bit 31 the kind, bits 0..30 the value.
std::uint32_t fold(std::uint64_t marker) noexcept {
  if (marker == 0) return 0;
  auto low = static_cast<std::uint32_t>(marker & 0x7fffffffu);
  if (marker & kPidfsTag) return 0x80000000u | low;
  return low == 0 ? 1 : low;  // 0 means "unknown"
}
}  // namespace

std::uint64_t task_marker(pid_t tid) noexcept {
  if (std::uint64_t ino = pidfs_inode(tid)) return kPidfsTag | ino;
  char state = 0;
  std::uint64_t start = 0;
  if (!read_proc_stat(tid, state, start)) return 0;
  return start & ~kPidfsTag;
}

pid_t current_pid() noexcept {
  pid_t pid = g_pid.load(std::memory_order_relaxed);
  if (pid == 0) {
    register_atfork();
    pid = static_cast<pid_t>(::syscall(SYS_getpid));
    g_pid.store(pid, std::memory_order_relaxed);
  }
  return pid;
}

pid_t current_tid() noexcept {
  if (t_tid == 0) {
    register_atfork();
    t_tid = static_cast<pid_t>(::syscall(SYS_gettid));
  }
  return t_tid;
}

std::uint64_t current_thread_ident() noexcept {
  if (t_ident == 0) {
    pid_t tid = current_tid();
    t_ident = (static_cast<std::uint64_t>(static_cast<std::uint32_t>(tid)) << 32) | fold(task_marker(tid));
  }
  return t_ident;
}

std::uint64_t current_process_ident() noexcept {
  const pid_t pid = current_pid();
  std::uint64_t ident = g_ident.load(std::memory_order_relaxed);
  if (static_cast<pid_t>(ident >> 32) != pid) {  // not made yet, or made before a fork
    ident = (static_cast<std::uint64_t>(static_cast<std::uint32_t>(pid)) << 32) | fold(task_marker(pid));
    g_ident.store(ident, std::memory_order_relaxed);
  }
  return ident;
}

bool owner_gone(pid_t tid, std::uint64_t ident) noexcept {
  if (tid <= 0) return false;
  char state = 0;
  std::uint64_t start = 0;
  bool have_stat = read_proc_stat(tid, state, start);
  if (!have_stat && ::kill(tid, 0) != 0 && errno == ESRCH) return true;  // gone (or no /proc: the kernel says so)
  if (have_stat && (state == 'Z' || state == 'X')) return true;         // dead, not yet reaped
  const bool same_tid = static_cast<pid_t>(ident >> 32) == tid;
  const auto recorded = static_cast<std::uint32_t>(ident);
  if (!same_tid || recorded == 0) return false;  // no marker to compare: alive as far as we know
  std::uint64_t now;
  if (recorded & 0x80000000u) {
    std::uint64_t ino = pidfs_inode(tid);
    if (ino == 0) return false;  // unknown (no descriptor left, or it ended this instant)
    now = kPidfsTag | ino;
  } else {
    if (!have_stat) return false;
    now = start;
  }
  return fold(now) != recorded;  // another task carries the tid now
}

}  // namespace mpx::detail
