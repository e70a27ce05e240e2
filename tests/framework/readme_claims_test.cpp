// Claims of README.md and docs/*.md that no other test checked, each tested
// as the sentence states it (quoted above each test):
// - a Process destroyed while its child runs is joined at exit;
// - an unbounded queue without grow_cells holds 262144 items, then put blocks;
// - a pipe send over 256 KiB blocks on a peer that does not read;
// - the shared-memory tracker's limits and its 2 s linger;
// - a lane claimed by a producer killed before it claimed a cell is reclaimed.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include "mpx/pipe.hpp"
#include "mpx/process.hpp"
#include "mpx/queue.hpp"
#include "mpx/shared_memory.hpp"
#include "mpx/sharedctypes.hpp"
#include "mpx/detail/shm_tracker.hpp"
#include "sync_test_util.hpp"

using namespace std::chrono_literals;
using mpx::test::Child;
using mpx::test::Signal;

namespace {

std::string unique_name(const std::string& tag) { return mpx::test::unique_segment_name("mpx_claims", tag); }
using mpx::test::SegmentCleanup;
using mpx::test::segment_exists;

std::size_t count_with_prefix(const std::string& prefix) {
  auto names = mpx::test::dev_shm_names();
  return static_cast<std::size_t>(
      std::count_if(names.begin(), names.end(), [&](const std::string& n) { return n.rfind(prefix, 0) == 0; }));
}

// Waits until `pid` (not necessarily our child) has ended; false after `timeout`.
bool wait_gone(pid_t pid, std::chrono::milliseconds timeout) {
  int fd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (fd < 0) return errno == ESRCH;
  pollfd p{fd, POLLIN, 0};
  int rc = ::poll(&p, 1, static_cast<int>(timeout.count()));
  ::close(fd);
  return rc == 1;
}

char state_of(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string content;
  std::getline(stat, content);
  auto close_paren = content.rfind(')');
  return close_paren == std::string::npos || close_paren + 2 >= content.size() ? '?' : content[close_paren + 2];
}

void say(const std::string& line) {
  std::string s = line + "\n";
  [[maybe_unused]] auto n = ::write(1, s.data(), s.size());
}

constexpr const char* kProgramRole = "MPX_CLAIMS_DESTROYED_RUNNING";

// The program of ProcessDestroyedWhileRunningIsJoinedAtExit (this binary,
// exec'd again): a Process object is destroyed while its child runs, then
// the program exits. The child is released only once the program has
// started to exit, and reports whether its parent then waited for it
// (asleep, not gone). Without the join at exit the parent would be gone and
// the child killed by its parent-death signal before saying anything.
[[noreturn]] void destroyed_while_running_program() {
  int gate[2];
  if (::pipe(gate) != 0) std::_Exit(3);
  const pid_t program = ::getpid();
  pid_t child = 0;
  {
    mpx::Process p([&] {
      ::close(gate[1]);
      char c;
      while (::read(gate[0], &c, 1) < 0 && errno == EINTR) {
      }
      // EOF: the program is exiting. It must now be blocked waiting for us.
      bool waited = mpx::test::eventually([&] { return state_of(program) == 'S'; }, 20s);
      say(std::string("child: the exiting parent waited for me: ") + (waited ? "yes" : "no"));
    });
    p.start();
    child = p.pid();
  }  // destroyed while the child runs: must neither block nor orphan it
  say("destroyed; active_children=" + std::to_string(mpx::active_children().size()) +
      " child alive=" + (mpx::test::pid_exists(child) && state_of(child) != 'Z' ? "yes" : "no"));
  ::close(gate[1]);
  ::close(gate[0]);
  std::exit(0);  // what returning from main does: the atexit handlers run
}

}  // namespace

// README.md, "Processes": "a `Process` destroyed while its child runs
// neither blocks nor orphans it (the child stays tracked and is joined at
// exit)"; docs/processes.md: "`active_children()` lists it and the atexit
// handler joins it".
TEST(ReadmeClaims, ProcessDestroyedWhileRunningIsJoinedAtExit) {
  if (std::getenv(kProgramRole)) destroyed_while_running_program();  // the exec'd program
  ASSERT_EQ(::setenv(kProgramRole, "1", 1), 0);
  auto r = mpx::test::run_program(
      {"/proc/self/exe", "--gtest_filter=ReadmeClaims.ProcessDestroyedWhileRunningIsJoinedAtExit"}, 60s);
  ::unsetenv(kProgramRole);
  ASSERT_FALSE(r.timed_out) << r.out << r.err;
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  auto lines = mpx::test::lines_of(r.out);
  auto has = [&](const std::string& l) { return std::find(lines.begin(), lines.end(), l) != lines.end(); };
  EXPECT_TRUE(has("destroyed; active_children=1 child alive=yes")) << r.out;
  EXPECT_TRUE(has("child: the exiting parent waited for me: yes")) << r.out;
}

// queue.hpp / docs/queues-and-pipes.md, "Unbounded queues": with
// `QueueOptions::grow_cells = false` an unbounded queue holds 262144 items
// (`QueueOptions::capacity`): beyond that `put` blocks (put_nowait: `Full`).
TEST(ReadmeClaims, UnboundedQueueWithoutGrowCellsHolds262144ItemsThenPutBlocks) {
  constexpr int kCapacity = 262144;
  mpx::QueueOptions fixed;
  fixed.grow_cells = false;
  mpx::Queue<int> q(0, fixed);
  for (int i = 0; i < kCapacity; ++i) q.put_nowait(i);  // no Full up to the documented capacity
  EXPECT_EQ(q.qsize(), static_cast<std::size_t>(kCapacity));
  EXPECT_THROW(q.put_nowait(-1), mpx::Full);
  Child producer([&] {
    q.put(kCapacity);  // blocks, never throws Full
    return 0;
  });
  ASSERT_TRUE(mpx::test::eventually_asleep_in_futex(producer.pid())) << "put past the capacity did not block";
  EXPECT_FALSE(producer.wait(0ms).has_value()) << "put past the capacity returned (or threw)";
  EXPECT_EQ(q.get(5s), 0);          // one get makes room ...
  EXPECT_EQ(producer.wait(), 0);    // ... and the blocked put completes
  EXPECT_EQ(q.qsize(), static_cast<std::size_t>(kCapacity));
  for (int i = 1; i <= kCapacity; ++i) ASSERT_EQ(q.get(5s), i);
}

// connection.hpp: "send blocks ... a message over 256 KiB until the receiver
// has copied all but the last 256 KiB of it (it streams through a lane)";
// docs/queues-and-pipes.md: "A `send` without timeout of a message larger than
// 256 KiB (streamed) to a peer that is alive but never reads blocks: use
// `send(x, timeout)`".
TEST(ReadmeClaims, PipeSendOver256KiBBlocksUntilTheReceiverReads) {
  constexpr std::size_t kLane = 256 * 1024;
  std::string fits(kLane, 'f');
  std::string over(kLane + 1, 'o');
  over.front() = '<';
  over.back() = '>';
  {
    // 256 KiB fit in a lane: sent without a reader.
    auto [a, b] = mpx::Pipe();
    EXPECT_NO_THROW(a.send_bytes(fits, 5s));
    // One byte more streams: the peer is alive but does not read, so the timed send gives up.
    EXPECT_THROW(a.send_bytes(over, 300ms), mpx::SendTimeoutError);
  }
  auto [a, b] = mpx::Pipe();
  Child sender([&, &a = a] {
    a.send_bytes(over);  // untimed: blocks until the receiver copies the first byte
    return 0;
  });
  ASSERT_TRUE(mpx::test::eventually_asleep_in_futex(sender.pid())) << "the send never blocked";
  EXPECT_FALSE(sender.wait(0ms).has_value()) << "send over 256 KiB returned without a reader";
  auto got = b.recv_bytes(20s);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(sender.wait(), 0);
  ASSERT_EQ(got->size(), over.size());
  EXPECT_EQ(std::memcmp(got->data(), over.data(), over.size()), 0);
}

// docs/queues-and-pipes.md, "Faults": "a producer that claimed a lane but
// died before publishing ... the lane is reclaimed by a producer that finds
// no free lane (after 20 ms)". The victim claims the only large lane, then
// blocks on the full ring (no cell claimed) and is killed there.
TEST(ReadmeClaims, ALaneClaimedByAProducerKilledBeforeItClaimedACellIsReclaimed) {
  mpx::QueueOptions o;
  o.lanes = 1;
  o.lane_bytes = 64 * 1024;
  mpx::Queue<std::string> q(1, o);
  q.put("in a cell", 1s);  // the ring (one cell) is full
  const std::string large(10'000, 'L');  // over small_lane_bytes: the large lane
  Child victim([&] {
    q.put(large);  // takes the lane, then waits for a cell
    return 0;
  });
  ASSERT_TRUE(mpx::test::eventually_asleep_in_futex(victim.pid())) << "the producer never blocked";
  victim.kill(SIGKILL);
  EXPECT_EQ(victim.join(), -SIGKILL);
  EXPECT_EQ(q.get(5s), "in a cell");
  // The only large lane belongs to the dead producer: this put must reclaim it.
  EXPECT_NO_THROW(q.put(large, 10s)) << "the dead producer's lane was never reclaimed";
  EXPECT_EQ(q.get(5s), large);
  EXPECT_THROW((void)q.get(100ms), mpx::Empty);  // nothing of the dead producer's message arrives
}

// mpx/detail/shm_tracker.hpp and docs/shared-memory.md: "The tracker exits
// 2 s after its last client disconnected", and its table file "is removed when
// the tracker exits normally".
TEST(ReadmeClaims, TrackerExitsTwoSecondsAfterItsLastClientAndRemovesItsTable) {
  mpx::test::PrivateTracker tracker;
  auto name = unique_name("linger");
  SegmentCleanup cleanup{{name}};
  mpx::RawValue<pid_t> tracker_pid(0);
  Child client([&] {
    mpx::SharedMemory shm(name, true, 64);
    *tracker_pid = mpx::detail::shm_tracker::tracker_pid();
    return 0;
  });
  ASSERT_EQ(client.join(), 0);  // the last client has disconnected when join returns
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_GT(*tracker_pid, 0);
  ASSERT_TRUE(wait_gone(*tracker_pid, 20s)) << "the tracker did not exit";
  const double lingered = mpx::test::seconds_since(t0);
  EXPECT_GE(lingered, 1.5) << "exited without lingering";  // 2 s, minus what join took
  EXPECT_LT(lingered, 10.0);
  EXPECT_FALSE(segment_exists(name));
  EXPECT_NE(::access(tracker.state_path().c_str(), F_OK), 0) << "table file left behind";
}

// docs/shared-memory.md, "Limits": "At most 1024 connected processes and 4096
// tracked names per user at once; beyond that `SharedMemory` creation throws
// `SharedMemoryError`".
TEST(ReadmeClaims, TrackerTracksAtMost4096NamesThenCreationThrows) {
  mpx::test::PrivateTracker tracker;
  const std::string prefix = unique_name("limit") + "_";
  SegmentCleanup cleanup;
  for (int i = 0; i <= 4097; ++i) cleanup.names.push_back(prefix + std::to_string(i));
  // Exit codes: 0 as documented, 1: the 4096th failed, 2: the 4097th did not, 3: no room after an unlink.
  Child creator([&] {
    std::vector<mpx::SharedMemory> held;
    held.reserve(4097);
    for (int i = 0; i < 4096; ++i) {
      try {
        held.emplace_back(prefix + std::to_string(i), true, 1);
      } catch (const mpx::SharedMemoryError&) {
        return 1;
      }
    }
    try {
      mpx::SharedMemory one_more(prefix + "4096", true, 1);
      return 2;
    } catch (const mpx::SharedMemoryError&) {
    }
    held.back().unlink();  // frees a name: creation works again
    try {
      mpx::SharedMemory again(prefix + "4097", true, 1);
      again.unlink();
    } catch (const mpx::SharedMemoryError&) {
      return 3;
    }
    return 0;
  });
  EXPECT_EQ(creator.join(60s), 0);
  EXPECT_FALSE(segment_exists(prefix + "4096")) << "a failed creation left its segment";
  // The creator is gone: the tracker unlinks every segment it held.
  EXPECT_TRUE(mpx::test::eventually([&] { return count_with_prefix(prefix) == 0; }, 20s))
      << count_with_prefix(prefix) << " segments leaked";
}

TEST(ReadmeClaims, TrackerServesAtMost1024ConnectedProcessesThenCreationThrows) {
  constexpr int kMaxClients = 1024;
  // This process opens ~1024 sockets, the tracker (started by a child, so
  // inheriting this limit) accepts as many: make room for both.
  rlimit nofile{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &nofile), 0);
  const rlimit saved = nofile;
  if (nofile.rlim_max != RLIM_INFINITY && nofile.rlim_max < 4 * kMaxClients)
    GTEST_SKIP() << "RLIMIT_NOFILE hard limit " << nofile.rlim_max << " is too low for this test";
  nofile.rlim_cur = std::max<rlim_t>(nofile.rlim_cur, 4 * kMaxClients);
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &nofile), 0);
  struct Restore {
    rlimit limit;
    std::vector<int> fds;
    ~Restore() {
      for (int fd : fds) ::close(fd);
      ::setrlimit(RLIMIT_NOFILE, &limit);
    }
  } restore{saved, {}};

  mpx::test::PrivateTracker tracker;
  auto first = unique_name("first"), second = unique_name("second"), third = unique_name("third");
  SegmentCleanup cleanup{{first, second, third}};
  Signal ready;
  Child holder([&] {  // client 1: starts the tracker and stays connected
    mpx::SharedMemory shm(first, true, 64);
    ready.notify();
    ::pause();
    return 0;
  });
  ASSERT_EQ(ready.wait(), 'x');
  // Other "processes": bare connections to the tracker's documented address
  // (abstract "\0mpx-shm-tracker-<uid>-<tag>"). Each takes a client slot.
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string path = "mpx-shm-tracker-" + std::to_string(::getuid()) + "-" + tracker.tag();
  std::memcpy(addr.sun_path + 1, path.data(), path.size());
  const auto addr_len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + path.size());
  auto connect_one = [&] {
    int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0) return false;
    restore.fds.push_back(fd);
    return ::connect(fd, reinterpret_cast<const sockaddr*>(&addr), addr_len) == 0;
  };
  for (int i = 0; i < kMaxClients - 2; ++i) ASSERT_TRUE(connect_one()) << "connection " << i << ": " << errno;
  // 1023 connected: one more process is served (its connection is accepted
  // after ours: the listen queue is FIFO).
  auto create = [](const std::string& name) {
    return [name] {
      try {
        mpx::SharedMemory shm(name, true, 64);
        return 0;
      } catch (const mpx::SharedMemoryError&) {
        return 2;
      }
    };
  };
  {
    Child fits(create(second));
    EXPECT_EQ(fits.join(), 0) << "the 1024th process was refused";
  }
  // Its slot is free again once it exited; fill it: 1024 connected.
  ASSERT_TRUE(connect_one());
  {
    Child refused(create(third));
    EXPECT_EQ(refused.join(), 2) << "a 1025th process was served";
  }
  EXPECT_FALSE(segment_exists(third)) << "a refused creation left its segment";
}

// mpx/detail/shm_tracker.hpp, "Descriptors": a client the tracker cannot
// take for want of descriptors "is refused, never left queued"; its
// register_created (so SharedMemory creation) "throws SharedMemoryError
// naming the reason". Issue 15: the tracker inherited its starter's
// RLIMIT_NOFILE, accept4 failed with EMFILE, its poll loop spun on the
// queued connection and the client waited for a reply forever. Here the
// starter's hard limit is 64 too, so the tracker cannot raise it.
TEST(ReadmeClaims, TrackerStartedUnderALowFdLimitRefusesInsteadOfHanging) {
  mpx::test::PrivateTracker tracker;
  auto first = unique_name("lowfd"), second = unique_name("lowfd"), third = unique_name("lowfd");
  SegmentCleanup cleanup{{first, second, third}};
  Signal ready;
  mpx::RawValue<pid_t> tracker_pid(0);
  Child holder([&] {  // starts the tracker with a soft and hard limit of 64 descriptors
    rlimit low{64, 64};
    if (::setrlimit(RLIMIT_NOFILE, &low) != 0) return 1;
    mpx::SharedMemory shm(first, true, 64);
    *tracker_pid = mpx::detail::shm_tracker::tracker_pid();
    ready.notify();
    ::pause();
    return 0;
  });
  ASSERT_EQ(ready.wait(), 'x');
  ASSERT_GT(*tracker_pid, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::string path = "mpx-shm-tracker-" + std::to_string(::getuid()) + "-" + tracker.tag();
  std::memcpy(addr.sun_path + 1, path.data(), path.size());
  const auto addr_len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + path.size());
  struct Fds {
    std::vector<int> fds;
    ~Fds() { close_all(); }
    void close_all() {
      for (int fd : fds) ::close(fd);
      fds.clear();
    }
  } bare;
  for (int i = 0; i < 80; ++i) {  // more connections than the tracker has descriptors
    int fd = ::socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    ASSERT_GE(fd, 0);
    bare.fds.push_back(fd);
    (void)::connect(fd, reinterpret_cast<const sockaddr*>(&addr), addr_len);
  }
  // Exit codes: 0 served, 2 refused with a message naming the descriptors, 3 another SharedMemoryError.
  auto create = [](const std::string& name) {
    return [name] {
      try {
        mpx::SharedMemory shm(name, true, 64);
        return 0;
      } catch (const mpx::SharedMemoryError& e) {
        return std::string(e.what()).find("file descriptors") != std::string::npos ? 2 : 3;
      }
    };
  };
  {
    Child late(create(second));
    const int code = late.join(30s);  // -1000: still blocked after 30 s (then killed)
    ASSERT_NE(code, -1000) << "SharedMemory creation hung on a tracker out of descriptors";
    EXPECT_EQ(code, 2) << "not refused for want of descriptors";
  }
  EXPECT_FALSE(segment_exists(second)) << "a refused creation left its segment";
  // Refusing is not spinning: the tracker goes back to sleep in poll.
  EXPECT_TRUE(mpx::test::eventually([&] { return state_of(*tracker_pid) == 'S'; }, 10s))
      << "the tracker never slept (state " << state_of(*tracker_pid) << ")";
  // Once descriptors are free again, the same tracker serves new processes.
  bare.close_all();
  Child later(create(third));
  EXPECT_EQ(later.join(30s), 0) << "the tracker did not recover after descriptors were freed";
  EXPECT_TRUE(mpx::test::pid_exists(*tracker_pid)) << "the tracker died";
}
