// ProcessOptions::limits: resource limits, nice value, CPU affinity and timer slack,
// applied in the child before its target runs, under fork and forkserver.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <mpx/mpx.hpp>
#include <new>
#include <thread>
#include <vector>

using namespace std::chrono_literals;

namespace {

// Burns CPU; exits 0 if it is still alive after 60 s of wall time.
void burn_cpu() {
  auto end = std::chrono::steady_clock::now() + 60s;
  volatile std::uint64_t x = 0;
  while (std::chrono::steady_clock::now() < end) {
    for (int i = 0; i < 1'000'000; ++i) x = x + 1;
  }
}
MPX_REGISTER_FUNCTION(burn_cpu);

// Exit 7 when an allocation of `bytes` fails, 0 when it succeeds.
void allocate(std::uint64_t bytes) {
  try {
    std::vector<char> block(bytes, 1);
    mpx::exit(block[bytes - 1] == 1 ? 0 : 2);
  } catch (const std::bad_alloc&) {
    mpx::exit(7);
  }
}
MPX_REGISTER_FUNCTION(allocate);

// Exits with the number of descriptors it could open (at most 200).
void open_until_refused() {
  int opened = 0;
  while (opened < 200 && ::open("/dev/null", O_RDONLY | O_CLOEXEC) >= 0) ++opened;
  mpx::exit(opened);
}
MPX_REGISTER_FUNCTION(open_until_refused);

// Exits with its nice value + 20 (an exit code is not negative).
void report_nice() {
  errno = 0;
  int nice = ::getpriority(PRIO_PROCESS, 0);
  mpx::exit(errno ? 100 : nice + 20);
}
MPX_REGISTER_FUNCTION(report_nice);

// Exits 0 when it may run on exactly CPU `cpu`.
void report_affinity(int cpu) {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (::sched_getaffinity(0, sizeof set, &set) != 0) mpx::exit(100);
  mpx::exit(CPU_COUNT(&set) == 1 && CPU_ISSET(cpu, &set) && mpx::process_cpu_count() == 1 ? 0 : 1);
}
MPX_REGISTER_FUNCTION(report_affinity);

// Exits 0 when its own timer slack and that of a thread it starts are
// `nanoseconds`, 1 when not.
void report_timer_slack(long nanoseconds) {
  long in_thread = -1;
  std::thread([&] { in_thread = ::prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0); }).join();
  mpx::exit(::prctl(PR_GET_TIMERSLACK, 0, 0, 0, 0) == nanoseconds && in_thread == nanoseconds ? 0 : 1);
}
MPX_REGISTER_FUNCTION(report_timer_slack);

int run(mpx::Process& p) {
  p.start();
  if (!p.join(60s)) {
    p.kill();
    p.join();
    return -1000;
  }
  return p.exitcode().value_or(-2000);
}

class Limits : public ::testing::TestWithParam<mpx::StartMethod> {
 protected:
  static void SetUpTestSuite() { mpx::set_start_method(mpx::StartMethod::forkserver); }
  static void TearDownTestSuite() { mpx::set_start_method(mpx::StartMethod::fork); }
  mpx::ProcessOptions with(mpx::ProcessLimits limits) const {
    return mpx::ProcessOptions().with_start_method(GetParam()).with_limits(std::move(limits));
  }
};

std::string method_name(const ::testing::TestParamInfo<mpx::StartMethod>& info) {
  return info.param == mpx::StartMethod::fork ? "fork" : "forkserver";
}

}  // namespace

TEST_P(Limits, CpuSecondsKillTheChildWithSigxcpu) {
  mpx::ProcessLimits limits;
  limits.cpu_seconds = 1;
  mpx::Process p(with(limits), burn_cpu);
  EXPECT_EQ(run(p), -SIGXCPU);
}

TEST_P(Limits, AddressSpaceMakesLargeAllocationsFail) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  // Both reserve terabytes of address space for their shadow memory: under
  // RLIMIT_AS their own allocators fail before the code under test runs.
  GTEST_SKIP() << "RLIMIT_AS and the sanitizer's shadow memory do not mix";
#endif
  mpx::ProcessLimits limits;
  limits.address_space = std::uint64_t{512} << 20;
  mpx::Process refused(with(limits), allocate, std::uint64_t{1} << 30);
  EXPECT_EQ(run(refused), 7) << "1 GiB allocated under a 512 MiB address-space limit";
  mpx::Process allowed(with(limits), allocate, std::uint64_t{16} << 20);
  EXPECT_EQ(run(allowed), 0) << "16 MiB refused under a 512 MiB address-space limit";
}

TEST_P(Limits, OpenFilesCapsDescriptors) {
  mpx::ProcessLimits limits;
  limits.open_files = 32;
  mpx::Process p(with(limits), open_until_refused);
  int opened = run(p);
  EXPECT_GT(opened, 0);
  EXPECT_LT(opened, 32);
  mpx::Process unlimited(mpx::ProcessOptions().with_start_method(GetParam()), open_until_refused);
  EXPECT_EQ(run(unlimited), 200);
}

TEST_P(Limits, NiceValue) {
  mpx::ProcessLimits limits;
  limits.nice = 7;
  mpx::Process p(with(limits), report_nice);
  EXPECT_EQ(run(p), 7 + 20);
}

TEST_P(Limits, CpuAffinity) {
  int cpu = mpx::cpu_count() - 1;  // the last CPU: not simply what the parent has first
  mpx::ProcessLimits limits;
  limits.cpu_affinity = {cpu};
  mpx::Process p(with(limits), report_affinity, cpu);
  EXPECT_EQ(run(p), 0);
}

TEST_P(Limits, TimerSlackHoldsForTheChildAndItsThreads) {
  mpx::ProcessLimits limits;
  limits.timer_slack = 3us;
  mpx::Process p(with(limits), report_timer_slack, 3000L);
  EXPECT_EQ(run(p), 0);
}

TEST_P(Limits, BadValuesAreRefusedAtStart) {
  mpx::ProcessLimits nice;
  nice.nice = 25;
  mpx::Process a(with(nice), report_nice);
  EXPECT_THROW(a.start(), mpx::ProcessError);
  mpx::ProcessLimits cpus;
  cpus.cpu_affinity = {-1};
  mpx::Process b(with(cpus), report_nice);
  EXPECT_THROW(b.start(), mpx::ProcessError);
  mpx::ProcessLimits slack;
  slack.timer_slack = 0ns;
  mpx::Process c(with(slack), report_nice);
  EXPECT_THROW(c.start(), mpx::ProcessError);
  slack.timer_slack = 2s;
  mpx::Process d(with(slack), report_nice);
  EXPECT_THROW(d.start(), mpx::ProcessError);
}

// A limit the child cannot apply: it does not run its target, exit code 1.
TEST_P(Limits, UnappliableLimitEndsTheChildBeforeItsTarget) {
  mpx::ProcessLimits limits;
  limits.cpu_affinity = {CPU_SETSIZE - 1};  // valid number, no such CPU here
  mpx::Process p(with(limits), report_nice);
  EXPECT_EQ(run(p), 1);
}

INSTANTIATE_TEST_SUITE_P(StartMethods, Limits,
                         ::testing::Values(mpx::StartMethod::fork, mpx::StartMethod::forkserver), method_name);
