// The spawn start method: the child is a fresh run of this program that
// takes over in mpx::freeze_support() (called first thing in main below),
// runs its registered target with its arguments and primitives, and exits;
// nothing of the parent's memory reaches it.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mpx/context.hpp>
#include <mpx/mpx.hpp>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "mpx/event.hpp"
#include "mpx/lock.hpp"
#include "mpx/shared_memory.hpp"
#include "mpx/sharedctypes.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;

namespace {

// Set by main() after freeze_support() returned: a spawned child, which
// takes over inside freeze_support(), never sets it.
bool g_main_went_on = false;
// Changed by the parent before a start: a spawned child sees the initial value.
int g_changed_by_parent = 7;

// Writes what the child sees of itself into `out`:
// [0] main went on, [1] g_changed_by_parent, [2] its pid, [3] its parent's
// pid by parent_process(), [4] getppid(), [5] start method (2 = spawn),
// [6] resident set in KiB, [7] 1 when its authkey is `key`.
void report_self(mpx::Array<long> out, std::string key) {
  out.set(0, g_main_went_on ? 1 : 0);
  out.set(1, g_changed_by_parent);
  out.set(2, ::getpid());
  out.set(3, mpx::parent_process() ? mpx::parent_process()->pid : -1);
  out.set(4, ::getppid());
  out.set(5, static_cast<long>(mpx::get_start_method()));
  long rss_kib = -1;
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmRSS:", 0) == 0) rss_kib = std::atol(line.c_str() + 6);
  }
  out.set(6, rss_kib);
  out.set(7, mpx::current_process().authkey() == key ? 1 : 0);
}
MPX_REGISTER_FUNCTION(report_self);

// Waits for `go`, then adds `times` to `counter` under `lock`, and writes
// `text` into `segment`.
void work_with_primitives(mpx::Event go, mpx::Lock lock, mpx::RawValue<int> counter, int times,
                          mpx::SharedMemory segment, std::string text) {
  if (!go.wait(30s)) mpx::exit(2);
  for (int i = 0; i < times; ++i) {
    std::lock_guard guard(lock);
    int v = counter.value();
    std::this_thread::yield();
    counter.set_value(v + 1);
  }
  std::memcpy(segment.buf().data(), text.data(), text.size());
}
MPX_REGISTER_FUNCTION(work_with_primitives);

void exit_with(int code) { mpx::exit(code); }
MPX_REGISTER_FUNCTION(exit_with);

void throw_runtime_error(int) { throw std::runtime_error("boom"); }
MPX_REGISTER_FUNCTION(throw_runtime_error);

void sleep_long(int seconds) { std::this_thread::sleep_for(std::chrono::seconds(seconds)); }
MPX_REGISTER_FUNCTION(sleep_long);

// A spawned child that spawns a grandchild: exits with the grandchild's exit code.
void spawn_grandchild(int code) {
  mpx::Process grandchild(exit_with, code);
  grandchild.start();
  grandchild.join();
  mpx::exit(grandchild.exitcode().value_or(99));
}
MPX_REGISTER_FUNCTION(spawn_grandchild);

mpx::ProcessOptions spawn_options() { return mpx::ProcessOptions().with_start_method(mpx::StartMethod::spawn); }

TEST(Spawn, TheChildIsAFreshImageThatRunsItsTargetAndNotMain) {
  mpx::Array<long> seen(8);
  g_changed_by_parent = 8;
  // A large touched heap in the parent: a spawned child has none of it.
  std::vector<char> heap(256 << 20, 1);
  mpx::Process p(spawn_options(), report_self, seen, mpx::current_process().authkey());
  p.start();
  ASSERT_TRUE(p.join(30s));
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_EQ(seen.get(0), 0) << "main() went on in the spawned child";
  EXPECT_EQ(seen.get(1), 7) << "the child saw the parent's memory";
  EXPECT_EQ(seen.get(2), p.pid());
  EXPECT_EQ(seen.get(3), ::getpid());
  EXPECT_EQ(seen.get(4), ::getpid()) << "the spawned child is our own child";
  EXPECT_EQ(seen.get(5), static_cast<long>(mpx::StartMethod::spawn));
  EXPECT_GT(seen.get(6), 0);
  EXPECT_LT(seen.get(6), 128 * 1024) << "a 256 MiB heap of the parent is resident in the child";
  EXPECT_EQ(seen.get(7), 1) << "the child lacks its Process's authkey";
  EXPECT_EQ(heap[12345], 1);
  g_changed_by_parent = 7;
}

TEST(Spawn, PrimitivesCrossAsArgumentsFromABusyMultiThreadedParent) {
  std::atomic<bool> stop{false};
  std::vector<std::thread> busy;
  for (int i = 0; i < 8; ++i) {
    busy.emplace_back([&stop] {
      std::vector<int> churn;
      while (!stop.load(std::memory_order_relaxed)) {
        churn.assign(1000, 1);  // malloc and free all the time
      }
    });
  }
  mpx::Event go;
  mpx::Lock lock;
  mpx::RawValue<int> counter(0);
  auto segment = mpx::SharedMemory::create(64);
  std::vector<mpx::Process> children;
  for (int i = 0; i < 3; ++i) {
    children.emplace_back(spawn_options(), work_with_primitives, go, lock, counter, 100, segment,
                          std::string("hello from spawn"));
    children.back().start();
  }
  go.set();
  for (auto& c : children) {
    ASSERT_TRUE(c.join(60s));
    EXPECT_EQ(c.exitcode(), 0);
  }
  stop = true;
  for (auto& t : busy) t.join();
  EXPECT_EQ(counter.value(), 300) << "the lock did not exclude the spawned children";
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(segment.buf().data()), 16), "hello from spawn");
  segment.close();
  segment.unlink();
}

TEST(Spawn, ExitCodesAsUnderFork) {
  mpx::Process three(spawn_options(), exit_with, 3);
  mpx::Process thrower(spawn_options(), throw_runtime_error, 0);
  mpx::Process sleeper(spawn_options(), sleep_long, 60);
  three.start();
  thrower.start();
  sleeper.start();
  ASSERT_TRUE(three.join(30s));
  ASSERT_TRUE(thrower.join(30s));
  EXPECT_EQ(three.exitcode(), 3);
  EXPECT_EQ(thrower.exitcode(), 1);
  EXPECT_TRUE(sleeper.is_alive());
  sleeper.terminate();
  ASSERT_TRUE(sleeper.join(30s));
  EXPECT_EQ(sleeper.exitcode(), -SIGTERM);
}

TEST(Spawn, ASpawnedChildSpawnsItsOwnChildren) {
  mpx::Process p(spawn_options(), spawn_grandchild, 5);
  p.start();
  ASSERT_TRUE(p.join(60s));
  EXPECT_EQ(p.exitcode(), 5) << "the grandchild (spawned by default in a spawned child) did not exit 5";
}

TEST(Spawn, ThroughAContextAndWithAKeyOfItsOwn) {
  auto ctx = mpx::get_context("spawn");
  mpx::Array<long> seen(8);
  mpx::Process p = ctx.Process(report_self, seen, std::string("spawn key"));
  p.set_authkey("spawn key");
  p.start();
  ASSERT_TRUE(p.join(30s));
  EXPECT_EQ(p.exitcode(), 0);
  EXPECT_EQ(seen.get(7), 1);
  EXPECT_EQ(seen.get(5), static_cast<long>(mpx::StartMethod::spawn));
}

TEST(Spawn, AClosureIsRefusedWithATypedError) {
  mpx::Process p(spawn_options(), [] {});
  try {
    p.start();
    FAIL() << "a closure was spawned";
  } catch (const mpx::ProcessError& e) {
    EXPECT_NE(std::string(e.what()).find("MPX_REGISTER_FUNCTION"), std::string::npos) << e.what();
  }
}

// The program run with MPX_SPAWN_TEST_INNER set skips freeze_support(): a
// spawn start there must be refused, not start a second run of main.
int start_without_freeze_support() {
  mpx::Process p(spawn_options(), exit_with, 0);
  try {
    p.start();
  } catch (const mpx::ProcessError& e) {
    return std::string(e.what()).find("freeze_support") != std::string::npos ? 0 : 3;
  }
  return 2;
}

TEST(Spawn, WithoutFreezeSupportInMainItIsATypedError) {
  auto r = mpx::test::run_program(
      {"/usr/bin/env", "MPX_SPAWN_TEST_INNER=1", "/proc/" + std::to_string(::getpid()) + "/exe"}, 60s);
  ASSERT_FALSE(r.timed_out);
  EXPECT_EQ(r.exit_code, 0) << "2: started anyway; 3: an error that does not name freeze_support\n" << r.err;
}

}  // namespace

int main(int argc, char** argv) {
  if (std::getenv("MPX_SPAWN_TEST_INNER")) return start_without_freeze_support();
  mpx::freeze_support();
  g_main_went_on = true;
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}
