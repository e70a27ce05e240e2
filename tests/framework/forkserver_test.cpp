// The forkserver start method: registered functions, serializable arguments,
// and safety when the parent is multi-threaded.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <memory>
#include <mpx/mpx.hpp>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {

std::mutex g_hammered;

void add_and_exit(int a, std::string b, std::vector<int> c) {
  int sum = a + static_cast<int>(b.size());
  for (int x : c) sum += x;
  mpx::exit(sum);
}
MPX_REGISTER_FUNCTION(add_and_exit);

// Takes the mutex the parent's threads hammer, and allocates: under fork
// from a multi-threaded parent this can inherit a locked mutex and hang.
void touch_mutex_and_heap() {
  std::lock_guard lock(g_hammered);
  auto block = std::make_unique<std::vector<int>>(1000, 1);
  if ((*block)[999] != 1) mpx::exit(2);
}
MPX_REGISTER_FUNCTION(touch_mutex_and_heap);

void throw_error() { throw std::runtime_error("from the fork server"); }
MPX_REGISTER_FUNCTION(throw_error);

void sleep_long() { std::this_thread::sleep_for(1h); }
MPX_REGISTER_FUNCTION(sleep_long);

void not_registered() {}

// Exit code 0 when the child reports the start method it was started with.
void check_start_method() { mpx::exit(mpx::get_start_method() == mpx::StartMethod::forkserver ? 0 : 1); }
MPX_REGISTER_FUNCTION(check_start_method);

// Exit code 0 when the child sees its requesting parent (not the server) alive.
void check_parent(int parent_pid) {
  auto parent = mpx::parent_process();
  mpx::exit(parent && parent->pid == parent_pid && parent->is_alive() && !parent->join(std::chrono::milliseconds(20))
                ? 0
                : 1);
}
MPX_REGISTER_FUNCTION(check_parent);

// A forkserver child that starts a forkserver child of its own: exit code
// 0 when the grandchild ran (it exits 7), 1 when it did not finish in time.
void start_a_forkserver_grandchild() {
  mpx::Process grandchild(mpx::ProcessOptions().with_start_method(mpx::StartMethod::forkserver), add_and_exit, 7,
                          std::string(), std::vector<int>{});
  grandchild.start();
  if (!grandchild.join(30s)) {
    grandchild.kill();
    mpx::exit(1);
  }
  mpx::exit(grandchild.exitcode() == 7 ? 0 : 2);
}
MPX_REGISTER_FUNCTION(start_a_forkserver_grandchild);

class ForkServer : public ::testing::Test {
 protected:
  void SetUp() override { mpx::set_start_method(mpx::StartMethod::forkserver); }
  void TearDown() override { mpx::set_start_method(mpx::StartMethod::fork); }
};

}  // namespace

TEST_F(ForkServer, RunsRegisteredFunctionWithArguments) {
  mpx::Process p(add_and_exit, 3, std::string("four"), std::vector<int>{10, 20});
  p.start();
  p.join();
  EXPECT_EQ(p.exitcode(), 3 + 4 + 10 + 20);
  EXPECT_TRUE(mpx::active_children().empty());
}

// The fork server was forked while its client's mutex was held: its workers
// inherited that mutex locked and hung at their own first forkserver start.
TEST_F(ForkServer, AForkserverChildCanStartForkserverChildrenOfItsOwn) {
  mpx::Process child(start_a_forkserver_grandchild);
  child.start();
  if (!child.join(60s)) {
    child.kill();
    (void)child.join(10s);
    FAIL() << "the forkserver child hung starting its own forkserver child";
  }
  EXPECT_EQ(child.exitcode(), 0) << "1: the grandchild did not finish, 2: wrong exit code";
}

TEST_F(ForkServer, ChildReportsTheStartMethodItWasStartedWith) {
  mpx::Process served(check_start_method);
  served.start();
  EXPECT_TRUE(served.join(20s));
  EXPECT_EQ(served.exitcode(), 0) << "a forkserver child reports another start method";
  // The same function started with fork reports fork.
  mpx::Process forked(mpx::ProcessOptions().with_start_method(mpx::StartMethod::fork), check_start_method);
  forked.start();
  EXPECT_TRUE(forked.join(20s));
  EXPECT_EQ(forked.exitcode(), 1);
}

TEST_F(ForkServer, ChildWatchesTheProcessThatAskedForIt) {
  mpx::Process p(check_parent, static_cast<int>(::getpid()));
  p.start();
  EXPECT_TRUE(p.join(20s));
  EXPECT_EQ(p.exitcode(), 0);
}

TEST_F(ForkServer, ReportsExceptionsAndSignalsLikeFork) {
  mpx::Process thrower(throw_error);
  mpx::Process sleeper(sleep_long);
  thrower.start();
  sleeper.start();
  EXPECT_TRUE(sleeper.is_alive());
  sleeper.terminate();
  thrower.join();
  EXPECT_TRUE(sleeper.join(20s));
  EXPECT_EQ(thrower.exitcode(), 1);
  EXPECT_EQ(sleeper.exitcode(), -SIGTERM);
}

TEST_F(ForkServer, RefusesClosuresAndUnregisteredFunctions) {
  mpx::Process closure([] {});
  EXPECT_THROW(closure.start(), mpx::ProcessError);
  mpx::Process unregistered(not_registered);
  EXPECT_THROW(unregistered.start(), mpx::ProcessError);
  // Per-process override: the same closure runs with fork.
  mpx::Process forked(mpx::ProcessOptions().with_start_method(mpx::StartMethod::fork), [] { mpx::exit(4); });
  forked.start();
  forked.join();
  EXPECT_EQ(forked.exitcode(), 4);
}

TEST_F(ForkServer, StartsTwoHundredProcessesWhileEightThreadsHammerMutexAndHeap) {
  std::atomic<bool> stop{false};
  std::vector<std::thread> hammers;
  for (int t = 0; t < 8; ++t) {
    hammers.emplace_back([&] {
      while (!stop.load(std::memory_order_relaxed)) {
        std::lock_guard lock(g_hammered);
        auto junk = std::make_unique<std::string>(256, 'x');
        (void)junk;
      }
    });
  }
  int ok = 0;
  for (int i = 0; i < 200; ++i) {
    mpx::Process p(touch_mutex_and_heap);
    p.start();
    if (p.join(60s) && p.exitcode() == 0) ++ok;
    else if (p.is_alive()) {
      p.kill();
      p.join();
    }
  }
  stop = true;
  for (auto& t : hammers) t.join();
  EXPECT_EQ(ok, 200);
}
