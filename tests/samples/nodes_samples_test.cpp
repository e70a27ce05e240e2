// The nodes sample (actors_distributed_producer_consumer), run as a program:
// every task is done exactly once although a consumer node is SIGKILLed
// midway, and the report says where each task ran; with --netns (root only)
// the same with each node in a network namespace of its own, which the
// sample deletes at the end.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "test_support.hpp"

using namespace std::chrono_literals;

namespace {

// The sample's report of 30 tasks with consumer-1 killed after task 9;
// returns consumer name -> the "net:[...]" ids its tasks reported (with --netns).
std::map<std::string, std::set<std::string>> check_report(const mpx::test::RunResult& r, bool netns) {
  std::map<std::string, std::set<std::string>> where;
  EXPECT_FALSE(r.timed_out) << r.out << r.err;
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  const auto lines = mpx::test::lines_of(r.out);
  const std::regex ran(netns ? R"(task (\d+) ran on (consumer-[12]) \(pid \d+\) in (net:\[\d+\]))"
                             : R"(task (\d+) ran on (consumer-[12]) \(pid \d+\))");
  std::set<int> done;
  std::set<std::string> before, after;
  bool killed = false;
  for (const auto& line : lines) {
    std::smatch m;
    if (line == "node consumer-1 killed after task 9") killed = true;
    if (!std::regex_match(line, m, ran)) continue;
    EXPECT_TRUE(done.insert(std::stoi(m[1].str())).second) << line;
    (killed ? after : before).insert(m[2].str());
    if (netns) where[m[2].str()].insert(m[3].str());
  }
  EXPECT_TRUE(killed) << r.out;
  EXPECT_EQ(done.size(), 30u) << r.out;
  EXPECT_EQ(before, (std::set<std::string>{"consumer-1", "consumer-2"})) << r.out;
  EXPECT_EQ(after, (std::set<std::string>{"consumer-2"})) << r.out;
  EXPECT_NE(r.out.find("moved from consumer-1 to consumer-2: node down"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("all 30 tasks done, each once"), std::string::npos) << r.out;
  return where;
}

}  // namespace

TEST(NodesSamples, DistributedProducerConsumerSurvivesAKilledConsumerNode) {
  auto r = mpx::test::run_sample("actors_distributed_producer_consumer", {"--tasks", "30", "--kill-after", "10"}, 120s);
  (void)check_report(r, false);
}

// Issue 13: the consumer nodes on "other machines": each node in its own
// network namespace, over veth and a bridge.
TEST(NodesSamples, DistributedProducerConsumerWithEachNodeInItsOwnNetworkNamespace) {
  if (::geteuid() != 0) GTEST_SKIP() << "network namespaces need root";
  auto r = mpx::test::run_sample("actors_distributed_producer_consumer",
                                 {"--tasks", "30", "--kill-after", "10", "--netns"}, 120s);

  // The namespaces it made (named after its pid: mpxn<pid>-<i>, switch mpxsw<pid>) are gone.
  const std::regex head(R"(namespaces: mpxn(\d+)-0 \S+ \S+)");
  std::smatch m;
  const auto lines = mpx::test::lines_of(r.out);
  ASSERT_FALSE(lines.empty());
  ASSERT_TRUE(std::regex_match(lines.front(), m, head)) << r.out;
  const std::string tag = m[1].str();
  std::vector<std::string> left;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator("/var/run/netns", ec)) {
    const std::string name = entry.path().filename().string();
    if (name == "mpxsw" + tag || name.rfind("mpxn" + tag + "-", 0) == 0) left.push_back(name);
  }
  for (const auto& name : left) (void)mpx::test::run_program({"/usr/sbin/ip", "netns", "del", name}, 20s);  // tidy up
  EXPECT_TRUE(left.empty()) << "left behind: " << left.front();

  const auto where = check_report(r, true);

  // Each consumer ran in one namespace, not the other's, not ours.
  char own[64] = {};
  ASSERT_GT(::readlink("/proc/self/ns/net", own, sizeof own - 1), 0);
  ASSERT_EQ(where.size(), 2u) << r.out;
  const auto& one = where.at("consumer-1");
  const auto& two = where.at("consumer-2");
  ASSERT_EQ(one.size(), 1u) << r.out;
  ASSERT_EQ(two.size(), 1u) << r.out;
  EXPECT_NE(*one.begin(), *two.begin()) << r.out;
  EXPECT_EQ(one.count(own), 0u) << r.out;
  EXPECT_EQ(two.count(own), 0u) << r.out;
}
