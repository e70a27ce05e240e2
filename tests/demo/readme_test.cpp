// The README is the front door: the commands, programs, paths and API names it
// shows must exist (tests/demo/readme_check.py does the reading). The demo's
// flags are run by log_analytics_test; the scripts' full runs (test.sh,
// bench.sh) are CI itself and the benchmarks.
#include <gtest/gtest.h>

#include <string>

#include "test_support.hpp"

using namespace std::chrono_literals;

TEST(Readme, EveryCommandPathAndApiNameItShowsExists) {
  const auto result = mpx::test::run_program(
      {"/usr/bin/python3", std::string(MPX_SOURCE_DIR) + "/tests/demo/readme_check.py", MPX_SOURCE_DIR, MPX_BINARY_DIR}, 60s);
  EXPECT_EQ(result.exit_code, 0) << result.out << result.err;
}

TEST(Readme, TheQuickStartDemoScriptRunsTheDemoProgram) {
  // scripts/demo.sh ends by exec'ing the demo program with the user's arguments.
  const auto help = mpx::test::run_program({std::string(MPX_BINARY_DIR) + "/demo/log_analytics", "--help"}, 60s);
  EXPECT_EQ(help.exit_code, 0) << help.err;
  for (const char* flag : {"--lines", "--input", "--no-chaos", "--compare-python"})
    EXPECT_NE((help.out + help.err).find(flag), std::string::npos) << flag << " is in the README but not in --help";
}
