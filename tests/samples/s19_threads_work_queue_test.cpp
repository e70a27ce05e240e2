// Seed 19: the work-queue pattern works between threads of one process.
#include <gtest/gtest.h>

#include <map>
#include <regex>
#include <string>

#include "test_support.hpp"

TEST(S19ThreadsWorkQueue, EveryWordIsProcessedOnceAndEveryThreadExits) {
  auto r = mpx::test::run_program({mpx::test::sample_path("s19_threads_work_queue")});
  ASSERT_EQ(r.exit_code, 0) << r.err;
  std::map<std::string, int> processed, started, exited;
  std::smatch m;
  for (const auto& line : mpx::test::lines_of(r.out)) {
    if (std::regex_match(line, m, std::regex("Thread-[123] processing (\\w+)"))) ++processed[m[1]];
    else if (std::regex_match(line, m, std::regex("Starting (Thread-[123])"))) ++started[m[1]];
    else if (std::regex_match(line, m, std::regex("Exiting (Thread-[123])"))) ++exited[m[1]];
  }
  EXPECT_EQ(processed, (std::map<std::string, int>{{"Five", 1}, {"Four", 1}, {"One", 1}, {"Three", 1}, {"Two", 1}}));
  EXPECT_EQ(started.size(), 3u);
  EXPECT_EQ(exited.size(), 3u);
  EXPECT_EQ(mpx::test::lines_of(r.out).back(), "Exiting Main Thread");
}
