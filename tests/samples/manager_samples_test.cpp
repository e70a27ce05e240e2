// The manager samples (seeds 06, 25, 26, 33), run as programs: each test
// checks the behaviour SEEDS.md states for its seed.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "test_support.hpp"

using mpx::test::lines_of;
using mpx::test::run_sample;
using namespace std::chrono_literals;

TEST(ManagerSamples, S06ChildChangesDictAndListParentSeesThem) {
  auto r = run_sample("s06_manager_dict_list", {}, 60s);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(lines_of(r.out), (std::vector<std::string>{"{haha: 88}", "[20]"}));
}

TEST(ManagerSamples, S25ValueArrayListChangedByAChildAndByAnotherProgramWrongKeyRefused) {
  auto r = run_sample("s25_manager_remote", {}, 60s);
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(lines_of(r.out), (std::vector<std::string>{
                                 "value: 3.14",
                                 "array: [5, 1, 2, 3, 4, 5, 6, 7, 8, 9]",
                                 "list: [changed by a child]",
                                 "list: [changed by a child, changed by another program]",
                                 "wrong key: refused (mpx::AuthenticationError)",
                             }));
  // The server logged the refusal.
  EXPECT_NE(r.err.find("refused a client"), std::string::npos) << r.err;
}

TEST(ManagerSamples, S26ManagerLockExcludesProcesses) {
  auto r = run_sample("s26_manager_lock", {}, 60s);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(lines_of(r.out),
            std::vector<std::string>{"counter = 200 (4 processes x 50 increments under the manager's Lock)"});
}

TEST(ManagerSamples, S33TenProcessesAllEntriesThere) {
  auto r = run_sample("s33_manager_pids", {}, 60s);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(lines_of(r.out),
            (std::vector<std::string>{"dict entries: 10", "list entries: 10", "every pid in both: yes"}));
}
