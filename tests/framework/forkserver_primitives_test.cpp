// Every primitive crosses to a forkserver child as an argument (its memory
// travels as a descriptor, SCM_RIGHTS), with the same results as under fork,
// from a parent whose 8 other threads are busy; and nothing leaks.
#include <dirent.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <mpx/mpx.hpp>
#include <mutex>
#include <optional>
#include <ranges>
#include <string>
#include <thread>
#include <vector>

#include "mpx/barrier.hpp"
#include "mpx/condition.hpp"
#include "mpx/event.hpp"
#include "mpx/lock.hpp"
#include "mpx/semaphore.hpp"
#include "mpx/shared_memory.hpp"
#include "mpx/sharedctypes.hpp"

using namespace std::chrono_literals;

namespace {

// ---- the children (registered: the fork server runs them by name) ----------

// Seed sample 05.
void set_twenty(mpx::Value<int> num) { num.set_value(20); }
MPX_REGISTER_FUNCTION(set_twenty);

// Seed sample 24.
void set_value_and_array(mpx::Value<double> n, mpx::Array<int> a) {
  n.set_value(3.14);
  a.set(0, 5);
}
MPX_REGISTER_FUNCTION(set_value_and_array);

// Seed sample 17: exit 0 when the event was set within the timeout, 1 when not.
void wait_event(mpx::Event e, int timeout_ms) { mpx::exit(e.wait(std::chrono::milliseconds(timeout_ms)) ? 0 : 1); }
MPX_REGISTER_FUNCTION(wait_event);

// Increments under the lock, read-modify-write in two steps so that a lock
// that does not exclude loses counts.
void add_under_lock(mpx::Lock lock, mpx::RawValue<int> counter, int times) {
  for (int i = 0; i < times; ++i) {
    std::lock_guard guard(lock);
    int v = counter.value();
    std::this_thread::yield();
    counter.set_value(v + 1);
  }
}
MPX_REGISTER_FUNCTION(add_under_lock);

// RLock recursion and Value's own lock in the child.
void add_under_rlock(mpx::RLock lock, mpx::Value<int> counter, int times) {
  for (int i = 0; i < times; ++i) {
    std::lock_guard outer(lock);
    std::lock_guard inner(lock);
    std::lock_guard own(counter.get_lock());
    ++counter.get_obj();
  }
}
MPX_REGISTER_FUNCTION(add_under_rlock);

// Waits on the condition until the flag is 1, then answers with 2.
void condition_answer(mpx::Condition cond, mpx::Value<int> flag) {
  std::unique_lock guard(cond);
  if (!cond.wait_for([&] { return flag.get_obj() == 1; }, 20s)) mpx::exit(1);
  flag.get_obj() = 2;
  cond.notify_all();
}
MPX_REGISTER_FUNCTION(condition_answer);

// Exit 0 when the barrier released us within 20 s.
void barrier_party(mpx::Barrier barrier) {
  try {
    (void)barrier.wait(20s);
  } catch (const mpx::BrokenBarrierError&) {
    mpx::exit(1);
  }
}
MPX_REGISTER_FUNCTION(barrier_party);

// Releases `s` once; then releases `bounded` past its bound: exit 3 when
// that is refused (as it must be), 0 when not.
void release_semaphores(mpx::Semaphore s, mpx::BoundedSemaphore bounded) {
  s.release();
  try {
    bounded.release();
  } catch (const mpx::SyncError&) {
    mpx::exit(3);
  }
}
MPX_REGISTER_FUNCTION(release_semaphores);

// Writes its text at the start of the segment.
void write_shm(mpx::SharedMemory shm, std::string text) {
  std::memcpy(shm.buf().data(), text.data(), text.size());
}
MPX_REGISTER_FUNCTION(write_shm);

// Holds many primitives while it blocks until killed.
void hold_and_block(mpx::Event never, mpx::Lock, mpx::Value<int>, mpx::Array<int>, mpx::SharedMemory, mpx::Event ready) {
  ready.set();
  (void)never.wait(60s);
}
MPX_REGISTER_FUNCTION(hold_and_block);

// ---- helpers ------------------------------------------------------------------

std::mutex g_hammered;

// Eight threads allocating and taking a mutex for as long as it lives: the
// parent of the children is as busy as a backend service.
class BusyThreads {
 public:
  BusyThreads() {
    for (int t = 0; t < 8; ++t) {
      threads_.emplace_back([this] {
        while (!stop_.load(std::memory_order_relaxed)) {
          std::lock_guard lock(g_hammered);
          auto junk = std::make_unique<std::string>(256, 'x');
          (void)junk;
        }
      });
    }
  }
  ~BusyThreads() {
    stop_ = true;
    for (auto& t : threads_) t.join();
  }

 private:
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
};

int count_fds(pid_t pid) {
  int n = 0;
  std::string path = "/proc/" + std::to_string(pid) + "/fd";
  if (DIR* d = ::opendir(path.c_str())) {
    while (dirent* e = ::readdir(d))
      if (e->d_name[0] != '.') ++n;
    ::closedir(d);
  }
  return n - (pid == ::getpid() ? 1 : 0);  // our own opendir descriptor
}

// `pid`'s descriptors and what they are, for failure messages.
std::string describe_fds(pid_t pid) {
  std::string out;
  std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] == '.') continue;
      char target[256] = {};
      std::string path = dir + "/" + e->d_name;
      (void)::readlink(path.c_str(), target, sizeof target - 1);
      out += std::string(" ") + e->d_name + "=" + target;
    }
    ::closedir(d);
  }
  return out;
}

// How many of `pid`'s descriptors are pidfds (the fork server holds one per
// running worker, and closes it a moment after the worker's status was sent).
int count_pidfds(pid_t pid) {
  int n = 0;
  std::string dir = "/proc/" + std::to_string(pid) + "/fd";
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] == '.') continue;
      char target[256] = {};
      std::string path = dir + "/" + e->d_name;
      if (::readlink(path.c_str(), target, sizeof target - 1) > 0 && std::strstr(target, "pidfd")) ++n;
    }
    ::closedir(d);
  }
  return n;
}

// The server updates its descriptors just after it answered (the reply, the
// exit status): polls `condition` until true, for at most 10 s.
template <class Condition>
bool eventually(Condition condition) {
  auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!condition()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(1ms);
  }
  return true;
}

// Runs a started process to its end (killing it if it overstays) and
// returns its exit code.
int finish(mpx::Process& p, std::chrono::seconds timeout = 60s) {
  if (!p.join(timeout)) {
    p.kill();
    p.join();
    return -1000;
  }
  return p.exitcode().value_or(-2000);
}

// The same patterns under fork and under forkserver.
class Primitives : public ::testing::TestWithParam<mpx::StartMethod> {
 protected:
  static void SetUpTestSuite() { mpx::set_start_method(mpx::StartMethod::forkserver); }  // single-threaded still
  static void TearDownTestSuite() { mpx::set_start_method(mpx::StartMethod::fork); }
  mpx::ProcessOptions options() const { return mpx::ProcessOptions().with_start_method(GetParam()); }
  BusyThreads busy_;
};

std::string method_name(const ::testing::TestParamInfo<mpx::StartMethod>& info) {
  return info.param == mpx::StartMethod::fork ? "fork" : "forkserver";
}

}  // namespace

TEST_P(Primitives, Sample05SharedValue) {
  mpx::Value<int> num(10);
  mpx::Process p(options(), set_twenty, num);
  p.start();
  ASSERT_EQ(finish(p), 0);
  EXPECT_EQ(num.value(), 20);
}

TEST_P(Primitives, Sample24ValueAndArray) {
  mpx::Value<double> num(0.0);
  mpx::Array<int> arr(std::views::iota(0, 10));
  mpx::Process p(options(), set_value_and_array, num, arr);
  p.start();
  ASSERT_EQ(finish(p), 0);
  EXPECT_EQ(num.value(), 3.14);
  EXPECT_EQ(arr.to_vector(), (std::vector<int>{5, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
}

TEST_P(Primitives, Sample17Event) {
  mpx::Event e;
  mpx::Process block(options(), wait_event, e, 20'000);
  mpx::Process nonblock(options(), wait_event, e, 50);
  block.start();
  nonblock.start();
  EXPECT_EQ(finish(nonblock), 1) << "the timed wait returned true before the event was set";
  EXPECT_TRUE(block.is_alive());
  e.set();
  EXPECT_EQ(finish(block), 0) << "the child did not see the parent's set()";
}

TEST_P(Primitives, LockExcludesAcrossChildren) {
  mpx::Lock lock;
  mpx::RawValue<int> counter(0);
  mpx::Process a(options(), add_under_lock, lock, counter, 300);
  mpx::Process b(options(), add_under_lock, lock, counter, 300);
  a.start();
  b.start();
  add_under_lock(lock, counter, 300);
  ASSERT_EQ(finish(a), 0);
  ASSERT_EQ(finish(b), 0);
  EXPECT_EQ(counter.value(), 900);
}

TEST_P(Primitives, RLockAndValueLockAcrossChildren) {
  mpx::RLock lock;
  mpx::Value<int> counter(0);
  mpx::Process a(options(), add_under_rlock, lock, counter, 300);
  a.start();
  add_under_rlock(lock, counter, 300);
  ASSERT_EQ(finish(a), 0);
  EXPECT_EQ(counter.value(), 600);
}

TEST_P(Primitives, ConditionWithItsLock) {
  mpx::Condition cond;
  mpx::Value<int> flag(0);
  mpx::Process p(options(), condition_answer, cond, flag);
  p.start();
  {
    std::unique_lock guard(cond);
    flag.get_obj() = 1;
    cond.notify_all();
    EXPECT_TRUE(cond.wait_for([&] { return flag.get_obj() == 2; }, 20s)) << "no answer from the child";
  }
  EXPECT_EQ(finish(p), 0);
}

TEST_P(Primitives, BarrierReleasesParentAndChildren) {
  mpx::Barrier barrier(3);
  mpx::Process a(options(), barrier_party, barrier);
  mpx::Process b(options(), barrier_party, barrier);
  a.start();
  b.start();
  EXPECT_NO_THROW((void)barrier.wait(20s));
  EXPECT_EQ(finish(a), 0);
  EXPECT_EQ(finish(b), 0);
}

TEST_P(Primitives, SemaphoreAndBoundedSemaphore) {
  mpx::Semaphore s(0);
  mpx::BoundedSemaphore bounded(1);
  mpx::Process p(options(), release_semaphores, s, bounded);
  p.start();
  EXPECT_TRUE(s.acquire(20s)) << "the child's release() did not reach the parent";
  EXPECT_EQ(finish(p), 3) << "the bound did not travel with the BoundedSemaphore";
  EXPECT_EQ(bounded.get_value(), 1u);
}

TEST_P(Primitives, SharedMemorySegment) {
  auto shm = mpx::SharedMemory::create(4096);
  mpx::Process p(options(), write_shm, shm, std::string("from the child"));
  p.start();
  EXPECT_EQ(finish(p), 0);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(shm.buf().data()), 14), "from the child");
  shm.close();
  shm.unlink();
}

INSTANTIATE_TEST_SUITE_P(StartMethods, Primitives,
                         ::testing::Values(mpx::StartMethod::fork, mpx::StartMethod::forkserver), method_name);

// ---- forkserver only ------------------------------------------------------------

class ForkserverPassing : public ::testing::Test {
 protected:
  void SetUp() override { mpx::set_start_method(mpx::StartMethod::forkserver); }
  void TearDown() override { mpx::set_start_method(mpx::StartMethod::fork); }
};

// A child killed while it holds passed descriptors leaves none open, neither
// in the fork server nor in the parent once the primitives are gone.
TEST_F(ForkserverPassing, KilledChildLeavesNoDescriptorBehind) {
  pid_t server = mpx::detail::forkserver_pid();
  ASSERT_GT(server, 0);
  {
    // The first SharedMemory connects to the shm tracker for good: not a leak.
    auto warm = mpx::SharedMemory::create(64);
    warm.unlink();
  }
  {
    // A served request: the server has finished starting (it closes its
    // copy of our socket end as it starts).
    mpx::Value<int> num(10);
    mpx::Process warmup(set_twenty, num);
    warmup.start();
    ASSERT_EQ(finish(warmup), 0);
  }
  // No worker still being reaped by the server.
  ASSERT_TRUE(eventually([&] { return count_pidfds(server) == 0; }));
  const int server_before = count_fds(server);
  const std::string server_fds_before = describe_fds(server);
  const int ours_before = count_fds(::getpid());
  {
    mpx::Event never, ready;
    mpx::Lock lock;
    mpx::Value<int> value(1);
    mpx::Array<int> array(100);
    auto shm = mpx::SharedMemory::create(4096);
    mpx::Process p(hold_and_block, never, lock, value, array, shm, ready);
    p.start();
    ASSERT_TRUE(ready.wait(20s)) << "the child did not start";
    // While the child runs, the server holds only its pidfd and status pipe.
    EXPECT_TRUE(eventually([&] { return count_fds(server) == server_before + 2; }))
        << count_fds(server) << " descriptors in the server, " << server_before << " + 2 expected:"
        << describe_fds(server);
    p.kill();
    ASSERT_TRUE(p.join(20s));
    EXPECT_EQ(p.exitcode(), -SIGKILL);
    shm.close();
    shm.unlink();
  }
  EXPECT_TRUE(eventually([&] { return count_fds(server) == server_before; }))
      << count_fds(server) << " descriptors in the server, " << server_before << " expected:" << describe_fds(server)
      << "; before:" << server_fds_before;
  EXPECT_EQ(count_fds(::getpid()), ours_before);
}

// As in Python, primitives cross only as process arguments, not in messages.
TEST_F(ForkserverPassing, PrimitiveInsideAMessageIsRefused) {
  mpx::Lock lock;
  EXPECT_THROW((void)mpx::encode(lock), mpx::SyncError);
  mpx::Event event;
  EXPECT_THROW((void)mpx::encode(event), mpx::SyncError);
}

// An argument that cannot travel fails the start with ProcessError, as
// every failed start does.
TEST_F(ForkserverPassing, ArgumentThatCannotTravelFailsTheStart) {
  mpx::Barrier barrier(2, [] {});
  mpx::Process with_action(barrier_party, barrier);
  EXPECT_THROW(with_action.start(), mpx::ProcessError);
  auto shm = mpx::SharedMemory::create(64);
  shm.unlink();
  shm.close();
  mpx::Process closed(write_shm, shm, std::string("x"));
  EXPECT_THROW(closed.start(), mpx::ProcessError);
}
