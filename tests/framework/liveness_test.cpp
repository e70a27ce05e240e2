// Exact liveness: a recycled pid (tid) is never taken for a live owner.
//
// Pid reuse is forced, not hoped for: a child enters a fresh pid namespace
// (unshare CLONE_NEWPID, with its own /proc), where nothing else forks; its
// first child is pid 1 there, and /proc/sys/kernel/ns_last_pid makes the
// next fork take exactly the pid of a process that just died, and in the
// same clock tick (retried until it is: a start time cannot tell those
// apart). Needs root (CAP_SYS_ADMIN); skipped otherwise.
#include <gtest/gtest.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <optional>
#include <span>
#include <vector>
#include <mpx/mpx.hpp>

#include "mpx/detail/identity.hpp"
#include "mpx/detail/ring.hpp"
#include "mpx/lock.hpp"

using namespace std::chrono_literals;

namespace {

constexpr int kSkip = 77;

// Reads exactly `n` bytes (false on EOF/error).
bool read_all(int fd, void* out, std::size_t n) {
  auto* p = static_cast<char*>(out);
  while (n) {
    ssize_t got = ::read(fd, p, n);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) return false;
    p += got;
    n -= static_cast<std::size_t>(got);
  }
  return true;
}

// Makes the next fork in this pid namespace get `pid`.
bool next_pid_is(pid_t pid) {
  FILE* f = std::fopen("/proc/sys/kernel/ns_last_pid", "w");
  if (!f) return false;
  bool ok = std::fprintf(f, "%d", pid - 1) > 0;
  return std::fclose(f) == 0 && ok;
}

// Runs `scenario` as pid 1 of a fresh pid namespace with its own /proc, in a
// child; returns its exit code (kSkip when namespaces are not available).
int in_fresh_pid_namespace(const std::function<int()>& scenario) {
  mpx::Process outer([&] {
    if (::unshare(CLONE_NEWPID | CLONE_NEWNS) != 0) mpx::exit(kSkip);
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) mpx::exit(kSkip);
    pid_t init = ::fork();
    if (init < 0) mpx::exit(kSkip);
    if (init == 0) {
      if (::mount("proc", "/proc", "proc", 0, nullptr) != 0) ::_exit(kSkip);
      ::_exit(scenario());
    }
    int status = 0;
    while (::waitpid(init, &status, 0) < 0 && errno == EINTR) {
    }
    mpx::exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
  });
  outer.start();
  if (!outer.join(60s)) {
    outer.kill();  // its namespace dies with its init
    outer.join();
    return -1000;
  }
  return outer.exitcode().value_or(-2000);
}

// In the namespace: forks a process that runs `first`, reaps it, then forks
// one more with the same pid that runs `second` (which writes a byte to
// `ready`) and waits until `release_fd` is closed. Retries until both
// started in the same clock tick (/proc/<pid>/stat field 22, 10 ms): the
// window that a start time cannot close. pid -1: reuse could not be forced.
struct Recycled {
  pid_t pid = -1;
  int release_fd = -1;
  int attempts = 0;
};
Recycled recycle_pid_within_one_tick(const std::function<void()>& first, const std::function<void(int)>& second,
                                     const std::function<void()>& between = [] {}) {
  Recycled r;
  for (r.attempts = 1; r.attempts <= 2000; ++r.attempts) {
    between();
    pid_t a = ::fork();
    if (a == 0) {
      first();
      ::_exit(0);
    }
    if (a < 0) return {};
    siginfo_t info{};
    ::waitid(P_PID, static_cast<id_t>(a), &info, WEXITED | WNOWAIT);  // a zombie: its stat is still readable
    char state = 0;
    std::uint64_t start_a = 0, start_b = 0;
    if (!mpx::detail::read_proc_stat(a, state, start_a)) return {};
    ::waitpid(a, nullptr, 0);
    if (!next_pid_is(a)) return {};
    int ready[2], release[2];
    if (::pipe(ready) != 0 || ::pipe(release) != 0) return {};
    pid_t b = ::fork();
    if (b == 0) {
      ::close(ready[0]);
      ::close(release[1]);
      second(ready[1]);
      char c;
      (void)::read(release[0], &c, 1);  // until the scenario is done
      ::_exit(0);
    }
    ::close(ready[1]);
    ::close(release[0]);
    char c;
    bool up = b == a && ::read(ready[0], &c, 1) == 1 && mpx::detail::read_proc_stat(b, state, start_b);
    ::close(ready[0]);
    if (up && start_a == start_b) {
      r.pid = b;
      r.release_fd = release[1];
      return r;
    }
    ::close(release[1]);
    if (b > 0) ::waitpid(b, nullptr, 0);
    if (b != a) return {};
  }
  return {};
}

}  // namespace

// The identity a thread records (detail::current_thread_ident) tells a dead
// owner from the process that got its pid next, even within one clock tick.
TEST(Liveness, RecycledTidIsNotTakenForTheDeadOwner) {
  int code = in_fresh_pid_namespace([] {
    int idents[2];
    if (::pipe(idents) != 0) return 10;
    auto report = [&] {
      std::uint64_t ident = mpx::detail::current_thread_ident();
      (void)::write(idents[1], &ident, sizeof ident);
    };
    std::uint64_t dead = 0, alive = 0;
    Recycled b = recycle_pid_within_one_tick(
        report,
        [&](int ready) {
          report();
          (void)::write(ready, "r", 1);
        },
        [&] {
          // A new round: forget the idents of the last one.
          std::uint64_t skip;
          pollfd p{idents[0], POLLIN, 0};
          while (::poll(&p, 1, 0) == 1 && read_all(idents[0], &skip, sizeof skip)) {
          }
        });
    if (b.pid < 0) return kSkip;
    if (!read_all(idents[0], &dead, sizeof dead) || !read_all(idents[0], &alive, sizeof alive)) return 11;
    int result = 0;
    if (!mpx::detail::owner_gone(b.pid, dead)) result = 1;       // the dead owner taken for alive
    else if (mpx::detail::owner_gone(b.pid, alive)) result = 2;  // the live one taken for dead
    ::close(b.release_fd);
    ::waitpid(b.pid, nullptr, 0);
    return result;
  });
  if (code == kSkip) GTEST_SKIP() << "no fresh pid namespace here (needs root)";
  EXPECT_NE(code, 1) << "a process that got the dead owner's pid was taken for the owner";
  EXPECT_NE(code, 2) << "a live owner was declared dead";
  EXPECT_EQ(code, 0);
}

// A Lock whose holder died is taken over although its pid now runs again.
TEST(Liveness, LockOfDeadHolderIsRecoveredAfterPidReuse) {
  int code = in_fresh_pid_namespace([] {
    std::optional<mpx::Lock> lock;
    Recycled b = recycle_pid_within_one_tick([&] { lock->acquire(); }, [](int ready) { (void)::write(ready, "r", 1); },
                                             [&] { lock.emplace(); });
    if (b.pid < 0) return kSkip;
    mpx::LockStatus status = lock->acquire_status(3s);
    ::close(b.release_fd);
    ::waitpid(b.pid, nullptr, 0);
    if (status == mpx::LockStatus::owner_died) return 0;
    return status == mpx::LockStatus::timed_out ? 1 : 2;
  });
  if (code == kSkip) GTEST_SKIP() << "no fresh pid namespace here (needs root)";
  EXPECT_NE(code, 1) << "the lock stayed held by a dead owner whose pid was recycled";
  EXPECT_EQ(code, 0);
}

// ---- The message ring under Queue: a claim whose holder died is recovered
// although its pid now runs again (and that process uses the ring too).

namespace {

using mpx::detail::ByteSink;
using mpx::detail::Deadline;
using mpx::detail::Ring;
using mpx::detail::RingOptions;

RingOptions small_ring(std::size_t capacity) {
  RingOptions o;
  o.capacity = capacity;
  o.small_lanes = 0;
  o.lanes = 2;
  o.lane_bytes = 4096;
  return o;
}

std::vector<std::byte> message(std::size_t n, int seed) {
  std::vector<std::byte> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::byte>((static_cast<int>(i) * 31 + seed) & 0xff);
  return v;
}

std::optional<std::vector<std::byte>> take(Ring& r, Deadline d) {
  std::optional<std::vector<std::byte>> out;
  auto sink = [&](std::span<const std::byte> b) { out.emplace(b.begin(), b.end()); };
  if (!r.get(ByteSink(sink), d)) return std::nullopt;
  return out;
}

}  // namespace

// A producer dies between claiming a cell and publishing it; a process with
// its pid then puts to the same ring. The consumer skips the dead claim and
// takes the impostor's message instead of waiting for it forever.
TEST(Liveness, RingClaimOfDeadProducerIsSkippedAfterPidReuse) {
  int code = in_fresh_pid_namespace([] {
    std::optional<Ring> ring;
    Recycled b = recycle_pid_within_one_tick(
        [&] {
          Ring::test_hook_after_claim_put = [] { ::_exit(0); };  // dies holding the claim
          (void)ring->put(message(8, 1), Deadline::after(5s));
        },
        [&](int ready) {
          bool put = ring->put(message(8, 2), Deadline::after(5s));
          (void)::write(ready, put ? "r" : "x", 1);
        },
        [&] { ring.emplace(Ring::create(small_ring(16))); });
    if (b.pid < 0) return kSkip;
    auto got = take(*ring, Deadline::after(3s));
    ::close(b.release_fd);
    ::waitpid(b.pid, nullptr, 0);
    if (!got) return 1;
    return *got == message(8, 2) ? 0 : 2;
  });
  if (code == kSkip) GTEST_SKIP() << "no fresh pid namespace here (needs root)";
  EXPECT_NE(code, 1) << "get waited on a dead producer's claim because its pid was recycled";
  EXPECT_EQ(code, 0);
}

// A consumer dies holding a cell of a full ring; a process with its pid then
// uses the ring. The next put recovers the cell instead of timing out.
TEST(Liveness, RingClaimOfDeadConsumerIsRecoveredAfterPidReuse) {
  int code = in_fresh_pid_namespace([] {
    std::optional<Ring> ring;
    Recycled b = recycle_pid_within_one_tick(
        [&] {
          Ring::test_hook_after_claim_get = [] { ::_exit(0); };  // dies holding item 1
          (void)take(*ring, Deadline::after(5s));
        },
        [&](int ready) {
          bool full = !ring->put(message(8, 9), Deadline::never(), false);  // registers; the ring is full
          (void)::write(ready, full ? "r" : "x", 1);
        },
        [&] {
          ring.emplace(Ring::create(small_ring(2)));
          (void)ring->put(message(8, 1), Deadline::after(1s));
          (void)ring->put(message(8, 2), Deadline::after(1s));
        });
    if (b.pid < 0) return kSkip;
    bool put = ring->put(message(8, 3), Deadline::after(3s));
    ::close(b.release_fd);
    ::waitpid(b.pid, nullptr, 0);
    if (!put) return 1;
    auto second = take(*ring, Deadline::after(1s));
    auto third = take(*ring, Deadline::after(1s));
    return second == message(8, 2) && third == message(8, 3) ? 0 : 2;
  });
  if (code == kSkip) GTEST_SKIP() << "no fresh pid namespace here (needs root)";
  EXPECT_NE(code, 1) << "put waited on a dead consumer's cell because its pid was recycled";
  EXPECT_EQ(code, 0);
}
