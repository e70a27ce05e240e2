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
#include <fstream>
#include <functional>
#include <map>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "exit_reports.hpp"
#include "mpx/actors.hpp"
#include "mpx/event.hpp"
#include "mpx/forkserver.hpp"
#include "mpx/queue.hpp"
#include "supervisor_snapshots.hpp"

using namespace std::chrono_literals;
namespace ma = mpx::actors;
using mpx::test::ReportLog;
using mpx::test::wait_for_child;

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

// How long wait_for_child() waits here: a nested supervisor's children
// reach the root's snapshot through its status segment (published every
// 0.5 s and at each change).
constexpr auto kNestedSnapshotLimit = 60s;

// The parent pid of `pid` (from /proc), 0 when unknown.
pid_t parent_of(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string content;
  std::getline(stat, content);
  const auto close_paren = content.rfind(')');
  if (close_paren == std::string::npos) return 0;
  std::istringstream rest(content.substr(close_paren + 2));
  char state = 0;
  long ppid = 0;
  rest >> state >> ppid;
  return static_cast<pid_t>(ppid);
}

// A nested supervisor started under `method` (its spec crosses: a host and
// a function child whose Queue argument crosses two starts) runs its
// children there; its host, SIGKILLed, is restarted by it, which the root's
// snapshot shows; killed once more it exhausts the nested intensity, and the
// nested supervisor's exit 1 reaches the root as its report (escalation),
// and the root starts it again.
void nested_under(mpx::StartMethod method, const std::string& prefix) {
  ReportLog log;
  mpx::Queue<Facts> out;
  const std::string nested = prefix + "-nested-" + std::to_string(::getpid()),
                    host = prefix + "-nhost-" + std::to_string(::getpid()), worker = prefix + "-nworker";
  std::optional<ma::Supervisor> sup;
  sup.emplace(prefix, log.options(),
              std::vector<ma::ChildSpec>{
                  ma::ChildSpec::supervisor(
                      nested, ma::SupervisorOptions().with_intensity(1, 60000ms),
                      {ma::ChildSpec::host(host, ma::HostOptions(), {ma::ActorSpec::make("method_teller", "t")}),
                       ma::ChildSpec::process<announce>(worker, worker, out)})
                      .with_start_method(method)
                      .with_shutdown(30000ms)});  // a nested one deaf to SIGTERM fails the test, not hangs it
  const pid_t nested_pid = info(*sup, nested).pid;
  ASSERT_GT(nested_pid, 0);
  if (method == mpx::StartMethod::forkserver) {
    EXPECT_EQ(parent_of(nested_pid), mpx::detail::forkserver_pid()) << "not forked by the fork server";
  } else {
    EXPECT_EQ(parent_of(nested_pid), ::getpid());
  }

  // Its function child runs (its Queue argument crossed twice) as a child of
  // the nested supervisor's process, with the nested process' default start
  // method: the one the nested supervisor was started with (under
  // forkserver, its own fork server's child).
  const int children_method = static_cast<int>(method);
  const Facts f = out.get(60s);
  EXPECT_EQ(f.child, worker);
  EXPECT_EQ(f.start_method, children_method);
  if (method == mpx::StartMethod::forkserver) {
    EXPECT_EQ(parent_of(parent_of(f.pid)), nested_pid) << "not a child of the nested process' own fork server";
  } else {
    EXPECT_EQ(parent_of(f.pid), nested_pid);
  }
  if (method == mpx::StartMethod::spawn) {
    EXPECT_FALSE(f.main_went_on) << "a spawned child ran main";
  }

  // Its host is reachable by name from here (the tree's mailbox names).
  const ma::ActorRef teller(host, "t", 0, 0);
  EXPECT_EQ(teller.request<int>(WhichMethod{}).get(60s), children_method);

  auto running = [](const ma::ChildSnapshot& c) { return c.state == "running" && c.pid > 0; };
  const auto first = wait_for_child(*sup, {nested, host}, running, kNestedSnapshotLimit);
  ASSERT_TRUE(first) << sup->snapshot().to_json(2);
  ASSERT_EQ(::kill(first->pid, SIGKILL), 0);
  const auto restarted = wait_for_child(*sup, {nested, host}, [&](const ma::ChildSnapshot& c) {
    return running(c) && c.pid != first->pid && c.restarts == 1;
  }, kNestedSnapshotLimit);
  ASSERT_TRUE(restarted) << sup->snapshot().to_json(2);
  EXPECT_EQ(restarted->last_exit, -SIGKILL);
  EXPECT_EQ(teller.request<int>(WhichMethod{}).get(60s), children_method);
  EXPECT_EQ(info(*sup, nested).pid, nested_pid);  // the nested supervisor restarted it itself
  EXPECT_TRUE(log.by_child().empty());

  // A second death within the period: the nested supervisor gives up (exit
  // 1), the root gets that report and starts the nested one again.
  ASSERT_EQ(::kill(restarted->pid, SIGKILL), 0);
  ASSERT_TRUE(log.wait_for(1));
  const auto escalated = log.by_child()[nested];
  ASSERT_EQ(escalated.size(), 1u);
  EXPECT_EQ(escalated[0].exit_code, 1);
  EXPECT_EQ(escalated[0].how, "exited");
  EXPECT_EQ(escalated[0].pid, nested_pid);
  EXPECT_FALSE(escalated[0].exception);  // giving up is an exit, not an exception
  const Facts again = out.get(60s);  // the new nested supervisor's worker
  EXPECT_EQ(again.child, worker);
  EXPECT_NE(again.pid, f.pid);
  const auto back = info(*sup, nested);
  EXPECT_NE(back.pid, nested_pid);
  EXPECT_EQ(back.restarts, 1u);
  EXPECT_EQ(teller.request<int>(WhichMethod{}).get(60s), children_method);
  const auto fresh_host = wait_for_child(*sup, {nested, host}, [&](const ma::ChildSnapshot& c) {
    return running(c) && c.restarts == 0 && c.pid != restarted->pid;
  }, kNestedSnapshotLimit);
  EXPECT_TRUE(fresh_host) << sup->snapshot().to_json(2);

  sup->stop();
  ASSERT_TRUE(log.wait_for(2));
  const auto stopped = log.by_child()[nested];
  ASSERT_EQ(stopped.size(), 2u);
  EXPECT_EQ(stopped[1].how, "stopped by the supervisor");
  EXPECT_EQ(stopped[1].exit_code, 0);  // SIGTERM: the nested supervisor stops its children and exits 0
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

TEST(SupervisorForkserver, NestedSupervisorRunsRestartsAndEscalatesUnderForkserver) {
  ASSERT_NE(mpx::detail::forkserver_pid(), 0);
  nested_under(mpx::StartMethod::forkserver, "nfs");
}

TEST(SupervisorForkserver, NestedSupervisorRunsRestartsAndEscalatesUnderSpawn) {
  nested_under(mpx::StartMethod::spawn, "nsp");
}

// The ActorError the construction of a supervisor with `children` throws
// (empty when none).
std::string start_error(const std::string& name, std::vector<ma::ChildSpec> children) {
  try {
    ma::Supervisor sup(name, ma::SupervisorOptions(), std::move(children));
  } catch (const ma::ActorError& e) {
    return e.what();
  }
  return "";
}

// Closures are forked only: asking for another start method is an error at
// the start, not a silent fork; so is a nested supervisor under another
// start method whose spec cannot cross (a closure child at any depth, an
// on_exit callback).
TEST(SupervisorForkserver, ClosureAndNestedChildrenRefuseOtherStartMethods) {
  EXPECT_NE(start_error("sfs-closure", {ma::ChildSpec::process("c", [] { idle_forever(); })
                                            .with_start_method(mpx::StartMethod::forkserver)}),
            "");
  const auto closure = start_error(
      "sfs-nested", {ma::ChildSpec::supervisor(
                         "sfs-n", ma::SupervisorOptions(),
                         {ma::ChildSpec::supervisor("sfs-nn", ma::SupervisorOptions(),
                                                    {ma::ChildSpec::process("deep", [] { idle_forever(); })})})
                         .with_start_method(mpx::StartMethod::spawn)});
  EXPECT_NE(closure.find("cannot start nested supervisor sfs-n with the spawn start method"), std::string::npos)
      << closure;
  EXPECT_NE(closure.find("deep is a closure"), std::string::npos) << closure;
  const auto callback = start_error(
      "sfs-nested-cb", {ma::ChildSpec::supervisor("sfs-ncb", ma::SupervisorOptions().with_on_exit([](const auto&) {}),
                                                  {})
                            .with_start_method(mpx::StartMethod::forkserver)});
  EXPECT_NE(callback.find("nested supervisor sfs-ncb has an on_exit callback"), std::string::npos) << callback;
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
