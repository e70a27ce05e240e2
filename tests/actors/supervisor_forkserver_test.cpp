// Supervised plain-function children (ChildSpec::process<Function>) under
// the forkserver and spawn start methods, from a parent that runs many
// threads (a backend service). Its own binary: main calls freeze_support()
// first (a spawned child takes over there), then starts the fork server
// before any thread exists.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "mpx/actors.hpp"
#include "mpx/event.hpp"
#include "mpx/queue.hpp"

using namespace std::chrono_literals;
namespace ma = mpx::actors;

namespace {

// What a child says about itself at each start.
struct Facts {
  std::string child;
  int start_method = -1;  // mpx::StartMethod
  pid_t pid = 0;
  int nice = 0;
  bool main_went_on = false;  // main's own work ran in this image (a spawned child's must not)
  template <class A>
  void serialize(A& ar) {
    ar(child, start_method, pid, nice, main_went_on);
  }
};

bool g_main_went_on = false;

Facts facts(const std::string& child) {
  errno = 0;
  const int nice = ::getpriority(PRIO_PROCESS, 0);
  return {child, static_cast<int>(mpx::get_start_method()), ::getpid(), nice, g_main_went_on};
}

[[noreturn]] void idle_forever() {
  for (;;) ::pause();
}

// Says who it is, then waits to be stopped.
void announce(std::string child, mpx::Queue<Facts> out) {
  out.put(facts(child));
  idle_forever();
}

// The first run throws (a supervisor-shared Event remembers it); the restart announces.
void throw_once(std::string child, mpx::Event threw, mpx::Queue<Facts> out) {
  if (!threw.is_set()) {
    threw.set();
    throw std::runtime_error("boom under " + std::to_string(static_cast<int>(mpx::get_start_method())));
  }
  announce(std::move(child), std::move(out));
}

void exit_with(int code) { mpx::exit(code); }

struct WhichMethod {
  template <class A>
  void serialize(A&) {}
};

ma::Behavior method_teller(ma::Context&) {
  return {[](const WhichMethod&) { return static_cast<int>(mpx::get_start_method()); }};
}
MPX_REGISTER_ACTOR(method_teller);

// Collects the reports on_exit gets; waits for them without polling.
struct ReportLog {
  std::mutex m;
  std::condition_variable cv;
  std::vector<ma::ExitReport> reports;

  ma::SupervisorOptions options() {
    return ma::SupervisorOptions().with_intensity(10, 60000ms).with_on_exit([this](const ma::ExitReport& r) {
      std::lock_guard lock(m);
      reports.push_back(r);
      cv.notify_all();
    });
  }
  bool wait_for(std::size_t n, std::chrono::milliseconds timeout = 60000ms) {
    std::unique_lock lock(m);
    return cv.wait_for(lock, timeout, [&] { return reports.size() >= n; });
  }
  std::map<std::string, std::vector<ma::ExitReport>> by_child() {
    std::lock_guard lock(m);
    std::map<std::string, std::vector<ma::ExitReport>> out;
    for (const auto& r : reports) out[r.child].push_back(r);
    return out;
  }
};

ma::ChildInfo info(const ma::Supervisor& sup, const std::string& id) {
  for (const auto& c : sup.which_children())
    if (c.id == id) return c;
  throw std::runtime_error("no child " + id);
}

// Eight threads that allocate and free all the time: malloc's locks are busy
// whenever the supervisor starts a child.
struct BusyThreads {
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  BusyThreads() {
    for (int i = 0; i < 8; ++i)
      threads.emplace_back([this] {
        std::vector<int> churn;
        while (!stop.load(std::memory_order_relaxed)) {
          churn.assign(1000, 1);
          churn.clear();
          churn.shrink_to_fit();
        }
      });
  }
  ~BusyThreads() {
    stop = true;
    for (auto& t : threads) t.join();
  }
};

// The whole life of a supervised function child under `method`: runs there
// (with its limits), is SIGKILLed and restarted (new pid, restarts 1), an
// uncaught exception reaches the report, an exit code is reported, and
// stop() ends it with SIGTERM.
void supervise_under(mpx::StartMethod method, const std::string& prefix) {
  BusyThreads busy;
  ReportLog log;
  mpx::Queue<Facts> out;
  mpx::Event threw;
  mpx::ProcessLimits limits;
  limits.nice = 7;  // raising it needs no privilege
  auto with_method = [method](ma::ChildSpec spec) {
    // the forkserver children take the process default (set in main)
    if (method != mpx::StartMethod::forkserver) spec.with_start_method(method);
    return spec;
  };
  const std::string worker = prefix + "-worker", thrower = prefix + "-throws", exiter = prefix + "-exit";
  std::optional<ma::Supervisor> sup;
  sup.emplace(prefix, log.options(),
              std::vector<ma::ChildSpec>{
                  with_method(ma::ChildSpec::process<announce>(worker, worker, out).with_limits(limits)),
                  with_method(ma::ChildSpec::process<throw_once>(thrower, thrower, threw, out)),
                  with_method(ma::ChildSpec::process<exit_with>(exiter, 7).with_restart(ma::RestartType::temporary))});

  std::map<std::string, Facts> first;
  for (int i = 0; i < 2; ++i) {  // the worker's start and the thrower's restart
    const Facts f = out.get(60s);
    first[f.child] = f;
  }
  ASSERT_EQ(first.count(worker), 1u);
  ASSERT_EQ(first.count(thrower), 1u);
  for (const auto& [child, f] : first) {
    EXPECT_EQ(f.start_method, static_cast<int>(method)) << child;
    EXPECT_EQ(f.pid, info(*sup, child).pid) << child;
    if (method == mpx::StartMethod::spawn) {
      EXPECT_FALSE(f.main_went_on) << child << ": a spawned child ran main";
    }
  }
  EXPECT_EQ(first[worker].nice, 7);  // the spec's limits applied

  ASSERT_EQ(::kill(first[worker].pid, SIGKILL), 0);
  const Facts again = out.get(60s);
  EXPECT_EQ(again.child, worker);
  EXPECT_NE(again.pid, first[worker].pid);
  EXPECT_EQ(again.nice, 7);  // at the restart too
  EXPECT_EQ(again.start_method, static_cast<int>(method));
  const auto restarted = info(*sup, worker);
  EXPECT_EQ(restarted.restarts, 1u);
  EXPECT_EQ(restarted.pid, again.pid);
  EXPECT_EQ(restarted.last_exit, -SIGKILL);

  ASSERT_TRUE(log.wait_for(3));  // thrower, exiter, killed worker
  sup->stop();
  ASSERT_TRUE(log.wait_for(5));  // worker and thrower stopped
  auto reports = log.by_child();

  ASSERT_EQ(reports[thrower].size(), 2u);
  const auto& boom = reports[thrower][0];
  EXPECT_EQ(boom.exit_code, 1);
  EXPECT_EQ(boom.how, "exited");
  ASSERT_TRUE(boom.exception);
  EXPECT_EQ(boom.exception->type, "std::runtime_error");
  EXPECT_EQ(boom.exception->message, "boom under " + std::to_string(static_cast<int>(method)));
  EXPECT_EQ(reports[thrower][1].how, "stopped by the supervisor");
  EXPECT_EQ(reports[thrower][1].exit_code, -SIGTERM);
  EXPECT_FALSE(reports[thrower][1].exception);  // the slot was emptied for the restart

  ASSERT_EQ(reports[exiter].size(), 1u);
  EXPECT_EQ(reports[exiter][0].exit_code, 7);
  EXPECT_FALSE(reports[exiter][0].exception);  // mpx::exit is not an exception

  ASSERT_EQ(reports[worker].size(), 2u);
  EXPECT_EQ(reports[worker][0].exit_code, -SIGKILL);
  EXPECT_EQ(reports[worker][0].how, "killed by signal");
  EXPECT_EQ(reports[worker][0].pid, first[worker].pid);
  EXPECT_EQ(reports[worker][1].exit_code, -SIGTERM);
  EXPECT_EQ(reports[worker][1].restarts, 1u);
  EXPECT_EQ(sup->reports().size(), 5u);  // the history holds the same
}

}  // namespace

// freeze_support first (a spawned child runs its target there and exits),
// then the fork server, before any thread, after static initialisation has
// registered every supervised function.
int main(int argc, char** argv) {
  mpx::freeze_support();
  g_main_went_on = true;
  mpx::set_start_method(mpx::StartMethod::forkserver);
  ::testing::InitGoogleTest(&argc, argv);
  return RUN_ALL_TESTS();
}

TEST(SupervisorForkserver, FunctionChildRunsRestartsAndReportsFromAParentWithEightBusyThreads) {
  ASSERT_NE(mpx::detail::forkserver_pid(), 0);
  supervise_under(mpx::StartMethod::forkserver, "sfs");
}

TEST(SupervisorForkserver, FunctionChildRunsRestartsAndReportsUnderSpawn) {
  supervise_under(mpx::StartMethod::spawn, "ssp");
}

TEST(SupervisorForkserver, FunctionChildStillForksWhenAsked) {
  supervise_under(mpx::StartMethod::fork, "sfk");
}

// Closures and nested supervisors are forked only: asking for another start
// method is an error at the start, not a silent fork.
TEST(SupervisorForkserver, ClosureAndNestedChildrenRefuseOtherStartMethods) {
  EXPECT_THROW(ma::Supervisor("sfs-closure", ma::SupervisorOptions(),
                              {ma::ChildSpec::process("c", [] { idle_forever(); })
                                   .with_start_method(mpx::StartMethod::forkserver)}),
               ma::ActorError);
  EXPECT_THROW(ma::Supervisor("sfs-nested", ma::SupervisorOptions(),
                              {ma::ChildSpec::supervisor("n", ma::SupervisorOptions(), {})
                                   .with_start_method(mpx::StartMethod::spawn)}),
               ma::ActorError);
  // A closure under the forkserver default is forked: it runs.
  mpx::Event ran;
  ma::Supervisor sup("sfs-default", ma::SupervisorOptions(),
                     {ma::ChildSpec::process("c", [ran]() mutable {
                       ran.set();
                       idle_forever();
                     })});
  EXPECT_TRUE(ran.wait(60s));
}

// A host child's spec start method replaces its HostOptions' (here: the
// process default, forkserver).
TEST(SupervisorForkserver, HostChildTakesTheSpecStartMethod) {
  ma::Supervisor sup("sfs-hosts", ma::SupervisorOptions(),
                     {ma::ChildSpec::host("sfs-host-default", ma::HostOptions(), {ma::ActorSpec::make("method_teller", "t")}),
                      ma::ChildSpec::host("sfs-host-spawn", ma::HostOptions(), {ma::ActorSpec::make("method_teller", "t")})
                          .with_start_method(mpx::StartMethod::spawn)});
  EXPECT_EQ(sup.host("sfs-host-default").actor("t").request<int>(WhichMethod{}).get(60s),
            static_cast<int>(mpx::StartMethod::forkserver));
  EXPECT_EQ(sup.host("sfs-host-spawn").actor("t").request<int>(WhichMethod{}).get(60s),
            static_cast<int>(mpx::StartMethod::spawn));
}
