// The shared-memory tracker under hostile conditions (issue 15), as
// mpx/detail/shm_tracker.hpp states them under "Bounded" and "Descriptors":
// - it raises its soft RLIMIT_NOFILE to the hard limit when it starts;
// - a tracker that does not answer (SIGSTOP) makes SharedMemory creation
//   throw SharedMemoryError within the reply timeout, for a connected process
//   and a new one alike, and serves the same process again after SIGCONT.
// (Refusal when out of descriptors all the same: readme_claims_test,
// TrackerStartedUnderALowFdLimitRefusesInsteadOfHanging.)
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstddef>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "mpx/detail/shm_tracker.hpp"
#include "mpx/shared_memory.hpp"
#include "mpx/sharedctypes.hpp"
#include "sync_test_util.hpp"

using namespace std::chrono_literals;
using mpx::test::Child;
using mpx::test::Signal;

namespace {

std::string unique_name(const std::string& tag) { return mpx::test::unique_segment_name("mpx_trk", tag); }
using mpx::test::SegmentCleanup;
using mpx::test::segment_exists;

char state_of(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string content;
  std::getline(stat, content);
  auto close_paren = content.rfind(')');
  return close_paren == std::string::npos || close_paren + 2 >= content.size() ? '?' : content[close_paren + 2];
}

// The "Max open files" soft and hard limits of `pid`, from /proc/<pid>/limits
// ("unlimited" reads as RLIM_INFINITY); {0, 0} when unreadable.
rlimit open_files_limit(pid_t pid) {
  std::ifstream limits("/proc/" + std::to_string(pid) + "/limits");
  for (std::string line; std::getline(limits, line);) {
    if (line.rfind("Max open files", 0) != 0) continue;
    std::istringstream fields(line.substr(std::strlen("Max open files")));
    std::string soft, hard;
    fields >> soft >> hard;
    auto value = [](const std::string& v) { return v == "unlimited" ? RLIM_INFINITY : std::stoull(v); };
    return rlimit{value(soft), value(hard)};
  }
  return rlimit{0, 0};
}

bool contains(const char* text, const char* part) { return std::strstr(text, part) != nullptr; }

// Resumes a stopped tracker when the test ends, also when it failed.
struct Resume {
  pid_t pid = 0;
  ~Resume() {
    if (pid > 0) ::kill(pid, SIGCONT);
  }
};

}  // namespace

TEST(ShmTrackerLimits, TrackerRaisesItsSoftFdLimitToTheHardLimit) {
  rlimit own{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &own), 0);
  if (own.rlim_max != RLIM_INFINITY && own.rlim_max < 256)
    GTEST_SKIP() << "RLIMIT_NOFILE hard limit " << own.rlim_max << " is too low for this test";
  mpx::test::PrivateTracker tracker;
  auto first = unique_name("raise"), second = unique_name("raise");
  SegmentCleanup cleanup{{first, second}};
  Signal ready;
  mpx::RawValue<pid_t> tracker_pid(0);
  Child holder([&] {  // starts the tracker with a soft limit of 64, the hard one unchanged
    rlimit low = own;
    low.rlim_cur = 64;
    if (::setrlimit(RLIMIT_NOFILE, &low) != 0) return 1;
    mpx::SharedMemory shm(first, true, 64);
    *tracker_pid = mpx::detail::shm_tracker::tracker_pid();
    ready.notify();
    ::pause();
    return 0;
  });
  ASSERT_EQ(ready.wait(), 'x');
  ASSERT_GT(*tracker_pid, 0);
  const rlimit limit = open_files_limit(*tracker_pid);
  EXPECT_EQ(limit.rlim_max, own.rlim_max);
  EXPECT_EQ(limit.rlim_cur, own.rlim_max) << "the tracker kept its starter's soft limit";

  // So it serves more processes than its starter's soft limit would allow:
  // 80 bare connections (each takes a client slot), then a real client.
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string path = "mpx-shm-tracker-" + std::to_string(::getuid()) + "-" + tracker.tag();
  std::memcpy(addr.sun_path + 1, path.data(), path.size());
  const auto addr_len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + path.size());
  struct Fds {
    std::vector<int> fds;
    ~Fds() {
      for (int fd : fds) ::close(fd);
    }
  } bare;
  for (int i = 0; i < 80; ++i) {
    int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    ASSERT_GE(fd, 0);
    bare.fds.push_back(fd);
    ASSERT_EQ(::connect(fd, reinterpret_cast<const sockaddr*>(&addr), addr_len), 0) << errno;
  }
  Child late([&] {
    try {
      mpx::SharedMemory shm(second, true, 64);
      return 0;
    } catch (const mpx::SharedMemoryError&) {
      return 2;
    }
  });
  EXPECT_EQ(late.join(30s), 0) << "the 82nd process was not served";
}

// The behaviour chosen for an unresponsive tracker: the call fails after the
// reply timeout, the process keeps its connection and registrations, and the
// same tracker serves it again once it runs (no second tracker is started
// while the first one still listens).
TEST(ShmTrackerLimits, AStoppedTrackerMakesCreationFailInBoundedTimeAndServesAgainAfterSigcont) {
  mpx::test::PrivateTracker tracker;
  auto before = unique_name("stop"), during = unique_name("stop"), after = unique_name("stop"),
       fresh_name = unique_name("stop");
  SegmentCleanup cleanup{{before, during, after, fresh_name}};
  Signal started, stopped, failed, resumed;
  mpx::RawValue<pid_t> tracker_pid(0);
  // Exit codes: 0 as documented; 10+ tells which step failed.
  Child client([&] {
    mpx::detail::shm_tracker::set_reply_timeout(300ms);
    mpx::SharedMemory one(before, true, 64);  // starts the tracker and connects
    *tracker_pid = mpx::detail::shm_tracker::tracker_pid();
    started.notify();
    if (stopped.wait(20s) != 'x') return 10;
    const auto t0 = std::chrono::steady_clock::now();
    try {
      mpx::SharedMemory two(during, true, 64);
      return 11;
    } catch (const mpx::SharedMemoryError& e) {
      if (!contains(e.what(), "did not answer")) return 12;
    }
    if (mpx::test::seconds_since(t0) > 5.0) return 13;
    if (segment_exists(during)) return 14;  // the failed creation removed its segment
    failed.notify();
    if (resumed.wait(20s) != 'x') return 15;
    try {
      mpx::SharedMemory three(after, true, 64);  // over the same connection
    } catch (const mpx::SharedMemoryError&) {
      return 16;
    }
    if (mpx::detail::shm_tracker::tracker_pid() != *tracker_pid) return 17;
    return 0;  // exits: the tracker must unlink `before` and `after`
  });
  ASSERT_EQ(started.wait(), 'x');
  const pid_t tpid = *tracker_pid;
  ASSERT_GT(tpid, 0);
  Resume resume{tpid};
  ASSERT_EQ(::kill(tpid, SIGSTOP), 0);
  ASSERT_TRUE(mpx::test::eventually([&] { return state_of(tpid) == 'T'; }, 10s)) << "the tracker did not stop";

  {  // A process not connected yet fails in bounded time too.
    Child fresh([&] {
      mpx::detail::shm_tracker::set_reply_timeout(300ms);
      const auto t0 = std::chrono::steady_clock::now();
      try {
        mpx::SharedMemory shm(fresh_name, true, 64);
        return 1;
      } catch (const mpx::SharedMemoryError& e) {
        if (!contains(e.what(), "did not answer")) return 2;
      }
      return mpx::test::seconds_since(t0) > 5.0 ? 3 : 0;
    });
    EXPECT_EQ(fresh.join(30s), 0) << "-1000: hung on a stopped tracker";
  }
  EXPECT_FALSE(segment_exists(fresh_name));

  stopped.notify();
  if (failed.wait(30s) != 'x') FAIL() << "the connected client failed: exit code " << client.join(30s);
  ASSERT_EQ(::kill(tpid, SIGCONT), 0);
  resumed.notify();
  EXPECT_EQ(client.join(30s), 0);
  // The resumed tracker still tracks: the client's segments go with it.
  EXPECT_TRUE(mpx::test::eventually([&] { return !segment_exists(before) && !segment_exists(after); }, 10s))
      << "the resumed tracker did not unlink the exited client's segments";
  EXPECT_FALSE(segment_exists(during));
}
