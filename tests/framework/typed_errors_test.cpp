// Errors that used to escape as std:: exceptions are typed mpx errors that
// keep the errno and say what was being done.
#include <gtest/gtest.h>

#include <cerrno>
#include <string>

#include "mpx/queue.hpp"
#include "mpx/sync_error.hpp"

TEST(TypedErrors, BadQueueOptionsAreQueueErrors) {
  auto expect_queue_error = [](mpx::QueueOptions o, const std::string& mentions) {
    try {
      mpx::Queue<int> q(0, o);
      ADD_FAILURE() << "no error for " << mentions;
    } catch (const mpx::QueueError& e) {
      EXPECT_NE(std::string(e.what()).find(mentions), std::string::npos) << e.what();
    }
  };
  mpx::QueueOptions lanes;
  lanes.lanes = 0;
  expect_queue_error(lanes, "lanes");
  mpx::QueueOptions lane_bytes;
  lane_bytes.lane_bytes = 100;
  expect_queue_error(lane_bytes, "lane_bytes");
  mpx::QueueOptions small;
  small.small_lane_bytes = 10;
  expect_queue_error(small, "small_lane_bytes");
  mpx::QueueOptions capacity;
  capacity.capacity = (std::size_t{1} << 26) + 1;
  expect_queue_error(capacity, "capacity");
}

TEST(TypedErrors, MappingFailureIsAnOSErrorWithErrnoAndContext) {
  // A lane of 1 PiB cannot be mapped (more than the address space).
  mpx::QueueOptions o;
  o.lane_bytes = std::size_t{1} << 50;
  o.lanes = 1;
  o.small_lanes = 0;
  try {
    mpx::Queue<int> q(0, o);
    ADD_FAILURE() << "a 1 PiB mapping succeeded";
  } catch (const mpx::OSError& e) {
    EXPECT_EQ(e.code(), ENOMEM);
    const std::string what = e.what();
    EXPECT_NE(what.find("mmap"), std::string::npos) << what;
    EXPECT_NE(what.find("ring"), std::string::npos) << what;
  }
  // And it is an mpx::Error, so one catch clause covers the library.
  EXPECT_THROW(mpx::Queue<int>(0, o), mpx::Error);
}
