// Value / Array / RawValue / RawArray: shared with forked children, locked
// accessors, the N*M increment stress test, bad input.
#include "mpx/sharedctypes.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <mutex>
#include <ranges>
#include <vector>

#include "sync_test_util.hpp"

using namespace std::chrono_literals;
using mpx::test::Child;

TEST(Value, ChildChangesWhatTheParentSees) {
  mpx::Value<int> v(10);
  EXPECT_EQ(v.value(), 10);
  Child child([&] {
    v.set_value(20);
    return 0;
  });
  ASSERT_EQ(child.join(), 0);
  EXPECT_EQ(v.value(), 20);
}

TEST(Value, AccessorsWorkWhileHoldingTheLock) {
  mpx::Value<double> v;
  EXPECT_EQ(v.value(), 0.0);
  std::lock_guard g(v.get_lock());  // an RLock: value() inside does not deadlock
  v.set_value(3.14);
  EXPECT_EQ(v.value(), 3.14);
}

TEST(Value, IncrementsUnderTheLockFromManyProcessesAddUp) {
  constexpr int kProcesses = 6, kIncrements = 20000;
  mpx::Value<long> counter(0);
  std::vector<std::unique_ptr<Child>> children;
  for (int p = 0; p < kProcesses; ++p)
    children.push_back(std::make_unique<Child>([&] {
      for (int i = 0; i < kIncrements; ++i) {
        std::lock_guard g(counter.get_lock());
        ++counter.get_obj();
      }
      return 0;
    }));
  for (auto& c : children) EXPECT_EQ(c->join(60s), 0);
  EXPECT_EQ(counter.value(), long{kProcesses} * kIncrements);
}

TEST(Value, DeadHolderIsReportedByTheAccessors) {
  mpx::Value<int> v(1);
  Child child([&] {
    v.get_lock().acquire();
    return 0;  // exits holding the lock
  });
  ASSERT_EQ(child.join(), 0);
  EXPECT_THROW((void)v.value(), mpx::OwnerDeadError);
  EXPECT_EQ(v.value(), 1);  // released after the report; usable again
}

TEST(Value, SharesAGivenLock) {
  mpx::RLock lock;
  mpx::Value<int> a(1, lock), b(2, lock);
  EXPECT_TRUE(a.get_lock().same_as(b.get_lock()));
}

struct Point {
  double x, y;
};

TEST(Value, HoldsAnyTriviallyCopyableType) {
  mpx::Value<Point> p(Point{1, 2});
  Child child([&] {
    p.set_value(Point{3, 4});
    return 0;
  });
  ASSERT_EQ(child.join(), 0);
  EXPECT_EQ(p.value().x, 3);
  EXPECT_EQ(p.value().y, 4);
}

TEST(Array, FromARangeChangedByAChild) {
  mpx::Array<int> a(std::views::iota(0, 10));
  EXPECT_EQ(a.size(), 10u);
  Child child([&] {
    a.set(0, 5);
    return 0;
  });
  ASSERT_EQ(child.join(), 0);
  EXPECT_EQ(a.to_vector(), (std::vector<int>{5, 1, 2, 3, 4, 5, 6, 7, 8, 9}));
  mpx::Array<int> zeros(3);
  EXPECT_EQ(zeros.to_vector(), (std::vector<int>{0, 0, 0}));
  mpx::Array<double> listed{1.5, 2.5};
  EXPECT_EQ(listed.get(1), 2.5);
}

TEST(Array, BadInputGetsClearErrors) {
  EXPECT_THROW(mpx::Array<int>(-1), mpx::SharedMemoryError);
  EXPECT_THROW(mpx::RawArray<int>(-3), mpx::SharedMemoryError);
  EXPECT_THROW(mpx::Array<int>(std::int64_t{1} << 60), mpx::SharedMemoryError);
  mpx::Array<int> a(4);
  EXPECT_THROW((void)a.get(4), mpx::SharedMemoryError);
  EXPECT_THROW(a.set(100, 1), mpx::SharedMemoryError);
}

TEST(RawArray, IsSharedWithoutALock) {
  mpx::RawArray<long> a(1000);
  mpx::RawValue<int> v(7);
  Child child([&] {
    for (std::size_t i = 0; i < a.size(); ++i) a[i] = static_cast<long>(i) * 2;
    *v = 8;
    return 0;
  });
  ASSERT_EQ(child.join(), 0);
  EXPECT_EQ(a[999], 1998);
  EXPECT_EQ(v.value(), 8);
}
