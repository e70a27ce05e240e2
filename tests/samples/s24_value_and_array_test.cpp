// Seed 24: a child changes a Value('d') and an Array('i'); the parent sees
// 3.14 and [5, 1, 2, ..., 9].
#include <gtest/gtest.h>

#include "test_support.hpp"

TEST(S24ValueAndArray, ParentSeesTheChildsChanges) {
  auto r = mpx::test::run_program({mpx::test::sample_path("s24_value_and_array")}, std::chrono::seconds(30));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "3.14\n[5, 1, 2, 3, 4, 5, 6, 7, 8, 9]\n");
}
