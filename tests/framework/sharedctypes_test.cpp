// Value / Array / RawValue / RawArray: shared with forked children, locked
// accessors, the N*M increment stress test, bad input.
#include "mpx/sharedctypes.hpp"

#include <gtest/gtest.h>

#include <memory>
#include <mutex>
#include <ranges>
#include <string>
#include <vector>

#include "mpx/shared_memory.hpp"
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

TEST(Value, PlacedInNamedSharedMemoryIsSeenByAttachers) {
  auto shm = mpx::SharedMemory::create(4096);
  auto v = mpx::Value<long>::create_at(shm, 0, 41);
  auto a = mpx::Array<int>::create_at(shm, 256, 10);
  std::string name = shm.name();
  Child child([&] {
    mpx::SharedMemory mine(name);  // attached by name, as an unrelated process would
    auto v2 = mpx::Value<long>::attach_at(mine, 0);
    {
      std::lock_guard g(v2.get_lock());
      ++v2.get_obj();
    }
    auto a2 = mpx::Array<int>::attach_at(mine, 256);
    if (a2.size() != 10) return 1;
    a2.set(3, 7);
    return 0;
  });
  ASSERT_EQ(child.join(), 0);
  EXPECT_EQ(v.value(), 42);
  EXPECT_EQ(a.get(3), 7);
  EXPECT_EQ(mpx::Value<long>::shared_size(), 136u);
  EXPECT_THROW((void)mpx::Value<long>::attach_at(shm, 1024), mpx::SharedMemoryError);  // nothing there
  EXPECT_THROW((void)mpx::Value<int>::attach_at(shm, 0), mpx::SharedMemoryError);      // wrong element type
  EXPECT_THROW((void)mpx::Array<int>::create_at(shm, 3968, 100), mpx::SharedMemoryError);  // does not fit
  EXPECT_THROW((void)mpx::Array<int>::create_at(shm, 8, 1), mpx::SharedMemoryError);       // misaligned
  EXPECT_THROW((void)mpx::Array<int>::create_at(shm, 512, -1), mpx::SharedMemoryError);    // negative
  shm.unlink();
}
