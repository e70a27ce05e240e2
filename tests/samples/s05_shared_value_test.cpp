// Seed 05: the child's write to a Value is what the parent reads: 20.
#include <gtest/gtest.h>

#include "test_support.hpp"

TEST(S05SharedValue, ParentReadsTheChildsValue) {
  auto r = mpx::test::run_program({mpx::test::sample_path("s05_shared_value")}, std::chrono::seconds(30));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, "20\n");
}
