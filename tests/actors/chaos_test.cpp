// Chaos: two supervisors x four worker hosts under steady load while random
// hosts are SIGKILLed every 50-500 ms. The service keeps running, every
// message is handled (twice only when it was in hand at a kill, and then
// flagged redelivered), and at the end no zombie, no /dev/shm segment of the
// run and no extra open file descriptor remain. 30 s, as issue 8 asks, by default
// (MPX_CHAOS_SECONDS overrides; the ctest label is "actors").
#include <dirent.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "mpx/actors.hpp"
#include "actor_ledger.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
namespace ma = mpx::actors;

namespace {

using mpx::test::Flush;
using mpx::test::Ledger;
using mpx::test::ledger;
using mpx::test::Numbered;
constexpr std::uint32_t kMaxMessages = mpx::test::kLedgerSize;  // the producer stops here (steady load for ~10 s)

std::size_t open_fds() {
  std::size_t n = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (dirent* e = ::readdir(d))
      if (e->d_name[0] != '.') ++n;
    ::closedir(d);
  }
  return n;
}

std::vector<ma::ChildSpec> hosts(const std::string& prefix) {
  std::vector<ma::ChildSpec> specs;
  for (int i = 0; i < 4; ++i)
    specs.push_back(ma::ChildSpec::host(prefix + std::to_string(i), ma::HostOptions(),
                                        {ma::ActorSpec::make("mpx::test::ledger_keeper", "w")}));
  return specs;
}

}  // namespace

TEST(Chaos, TwoSupervisorsFourHostsEachRandomKillsNothingLost) {
  const int seconds = std::getenv("MPX_CHAOS_SECONDS") ? std::atoi(std::getenv("MPX_CHAOS_SECONDS")) : 30;
  Ledger* l = ledger();
  l->clear();
  const auto shm_before = mpx::test::dev_shm_names();
  std::size_t fds_before = 0;
  std::uint32_t sent = 0;
  int kills = 0;
  {
    auto options = ma::SupervisorOptions().with_intensity(1000, 10000ms);
    ma::Supervisor a("chaos-a", options, hosts("chaos-a"));
    ma::Supervisor b("chaos-b", options, hosts("chaos-b"));
    std::vector<ma::ActorRef> workers;
    for (int i = 0; i < 4; ++i) {
      workers.push_back(a.host("chaos-a" + std::to_string(i)).actor("w"));
      workers.push_back(b.host("chaos-b" + std::to_string(i)).actor("w"));
    }
    for (auto& w : workers) ASSERT_TRUE(w.request<bool>(Flush{}).get(60s));  // every path warm
    fds_before = open_fds();

    std::atomic<bool> stop{false};
    std::thread producer([&] {
      while (!stop.load() && sent < kMaxMessages) {
        workers[sent % workers.size()].send(Numbered{sent});  // waits in the mailbox while a host is down
        ++sent;
      }
    });
    std::mt19937 rng(std::random_device{}());
    const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(seconds);
    while (std::chrono::steady_clock::now() < end) {
      std::this_thread::sleep_for(std::chrono::milliseconds(std::uniform_int_distribution<int>(50, 500)(rng)));
      ma::Supervisor& sup = rng() % 2 ? a : b;
      auto children = sup.which_children();
      auto& victim = children[rng() % children.size()];
      if (victim.pid > 0 && ::kill(victim.pid, SIGKILL) == 0) ++kills;
    }
    stop = true;
    producer.join();
    EXPECT_FALSE(a.failed());
    EXPECT_FALSE(b.failed());
    // Every worker answers once its host runs again; each flush follows all
    // the producer's messages to that worker.
    for (auto& w : workers) {
      auto deadline = std::chrono::steady_clock::now() + 60s;
      bool flushed = false;
      while (!flushed && std::chrono::steady_clock::now() < deadline) {
        try {
          flushed = w.request<bool>(Flush{}).get(60s);
        } catch (const ma::ActorDown&) {
          std::this_thread::sleep_for(5ms);  // its host is being restarted
        }
      }
      EXPECT_TRUE(flushed) << w;
    }
    EXPECT_EQ(open_fds(), fds_before);  // restarts leak no descriptor
    a.stop();
    b.stop();
  }
  ASSERT_GT(kills, 5);
  int missing = 0, twice_unflagged = 0, more = 0, duplicates = 0;
  for (std::uint32_t i = 0; i < sent; ++i) {
    int n = l->handled[i].load();
    if (n == 0) ++missing;
    if (n >= 2) {
      duplicates += n - 1;
      if (!l->flagged[i].load()) ++twice_unflagged;
    }
    if (n > 2) ++more;
  }
  RecordProperty("sent", static_cast<int>(sent));
  RecordProperty("kills", kills);
  EXPECT_EQ(missing, 0) << "of " << sent;
  EXPECT_EQ(twice_unflagged, 0);
  EXPECT_LE(duplicates, kills);  // one in hand per killed host (one actor each)
  RecordProperty("handled_more_than_twice", more);  // possible only when a redelivery is killed in hand again
  for (const auto& child : mpx::test::children_of(::getpid())) EXPECT_NE(child.state, 'Z') << child.pid;
  auto shm_after = mpx::test::dev_shm_names();
  for (const auto& name : shm_after)
    if (!shm_before.count(name) && name.find("chaos-") != std::string::npos) ADD_FAILURE() << "leaked /dev/shm/" << name;
}
