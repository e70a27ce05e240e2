// Seed 17: the timed waiter gives up at about 2 s and sees false; the
// blocked waiter wakes when the parent sets the event (at about 3 s) and
// sees true. The order of the lines shows who woke when.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <string>

#include "test_support.hpp"

TEST(S17Event, TimedWaiterGivesUpBlockedWaiterWakesOnSet) {
  auto r = mpx::test::run_program({mpx::test::sample_path("s17_event")}, std::chrono::seconds(30));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto lines = mpx::test::lines_of(r.out);
  ASSERT_EQ(lines.size(), 5u) << r.out;
  auto index_of = [&](const std::string& prefix) {
    auto it = std::find_if(lines.begin(), lines.end(), [&](auto& l) { return l.rfind(prefix, 0) == 0; });
    return it == lines.end() ? -1 : static_cast<int>(it - lines.begin());
  };
  int started1 = index_of("wait_for_event: starting");
  int started2 = index_of("wait_for_event_timeout: starting");
  int timed_out = index_of("wait_for_event_timeout: e.is_set() -> false");
  int set = index_of("main: event is set");
  int woke = index_of("wait_for_event: e.is_set() -> true");
  ASSERT_GE(started1, 0) << r.out;
  ASSERT_GE(started2, 0) << r.out;
  ASSERT_GE(timed_out, 0) << r.out;
  ASSERT_GE(set, 0) << r.out;
  ASSERT_GE(woke, 0) << r.out;
  EXPECT_LT(timed_out, set) << "the timed waiter must give up before the event is set";
  EXPECT_GT(woke, started1);
  // "(waited 2.00 s)": about 2 s, generous bounds for a loaded machine.
  auto waited = std::atof(lines[timed_out].substr(lines[timed_out].find("waited ") + 7).c_str());
  EXPECT_GE(waited, 1.95);
  EXPECT_LT(waited, 2.9);
  // The parent sets the event after 3 s; the whole run ends soon after.
  EXPECT_GE(r.elapsed.count(), 2.95);
  EXPECT_LT(r.elapsed.count(), 15.0);
}
