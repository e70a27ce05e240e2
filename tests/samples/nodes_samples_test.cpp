// The nodes sample (actors_distributed_producer_consumer), run as a program:
// every task is done exactly once although a consumer node is SIGKILLed
// midway, and the report says where each task ran.
#include <gtest/gtest.h>

#include <regex>
#include <set>
#include <string>

#include "test_support.hpp"

using namespace std::chrono_literals;

TEST(NodesSamples, DistributedProducerConsumerSurvivesAKilledConsumerNode) {
  auto r = mpx::test::run_sample("actors_distributed_producer_consumer", {"--tasks", "30", "--kill-after", "10"}, 120s);
  ASSERT_FALSE(r.timed_out) << r.out << r.err;
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  const auto lines = mpx::test::lines_of(r.out);
  const std::regex ran(R"(task (\d+) ran on (consumer-[12]) \(pid \d+\))");
  std::set<int> done;
  std::set<std::string> before, after;
  bool killed = false;
  for (const auto& line : lines) {
    std::smatch m;
    if (line == "node consumer-1 killed after task 9") killed = true;
    if (!std::regex_match(line, m, ran)) continue;
    EXPECT_TRUE(done.insert(std::stoi(m[1].str())).second) << line;
    (killed ? after : before).insert(m[2].str());
  }
  EXPECT_TRUE(killed) << r.out;
  EXPECT_EQ(done.size(), 30u) << r.out;
  EXPECT_EQ(before, (std::set<std::string>{"consumer-1", "consumer-2"})) << r.out;
  EXPECT_EQ(after, (std::set<std::string>{"consumer-2"})) << r.out;
  EXPECT_NE(r.out.find("moved from consumer-1 to consumer-2: node down"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("all 30 tasks done, each once"), std::string::npos) << r.out;
}
