#include "mpx/detail/identity.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
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

void refresh_after_fork() noexcept {
  // Runs in the child of fork(), in the only thread there is.
  g_pid.store(static_cast<pid_t>(::syscall(SYS_getpid)), std::memory_order_relaxed);
  t_tid = 0;
  t_ident = 0;
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
    char state = 0;
    std::uint64_t start = 0;
    if (!read_proc_stat(tid, state, start)) start = 0;
    t_ident = (static_cast<std::uint64_t>(static_cast<std::uint32_t>(tid)) << 32) |
              static_cast<std::uint32_t>(start);
  }
  return t_ident;
}

bool owner_gone(pid_t tid, std::uint64_t ident) noexcept {
  if (tid <= 0) return false;
  char state = 0;
  std::uint64_t start = 0;
  if (!read_proc_stat(tid, state, start)) {
    // No /proc entry: either gone, or /proc is not mounted; ask the kernel.
    return ::kill(tid, 0) != 0 && errno == ESRCH;
  }
  if (state == 'Z' || state == 'X') return true;  // dead, not yet reaped
  bool same_tid = static_cast<pid_t>(ident >> 32) == tid;
  auto recorded = static_cast<std::uint32_t>(ident);
  if (same_tid && recorded != 0 && recorded != static_cast<std::uint32_t>(start)) return true;  // tid reused
  return false;
}

}  // namespace mpx::detail
