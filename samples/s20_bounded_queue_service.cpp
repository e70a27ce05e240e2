// Seed 20: a bounded Queue(5); a producer process puts every 3 s, a consumer
// polls empty() and qsize() every 1 s, forever: a long-running service pair.
//
//   s20_bounded_queue_service                       Python's timings, forever
//   s20_bounded_queue_service PUT_MS POLL_MS ITEMS  e.g. 10 50 20: a test run
//
// With ITEMS the consumer takes one item per poll and both stop after ITEMS;
// a producer faster than the consumer fills the queue to 5 and then blocks
// in put, which it reports.
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <string>
#include <thread>

#include "mpx/process.hpp"
#include "mpx/queue.hpp"

void say(const std::string& line) {
  std::string s = line + "\n";
  [[maybe_unused]] auto n = ::write(1, s.data(), s.size());
}

using Clock = std::chrono::steady_clock;
using ms = std::chrono::milliseconds;

void producer(mpx::Queue<int> q, int put_ms, long items) {
  for (long i = 0; items < 0 || i < items; ++i) {
    std::this_thread::sleep_for(ms(put_ms));
    bool was_full = q.full();
    auto t0 = Clock::now();
    q.put(static_cast<int>(i));  // blocks while 5 items wait
    auto blocked = std::chrono::duration_cast<ms>(Clock::now() - t0).count();
    say("producer: put " + std::to_string(i) + (was_full ? " (queue was full, blocked " + std::to_string(blocked) + " ms)" : ""));
  }
}

void consumer(mpx::Queue<int> q, int poll_ms, long items) {
  for (long got = 0; items < 0 || got < items;) {
    std::this_thread::sleep_for(ms(poll_ms));
    std::size_t size = q.qsize();
    say("consumer: qsize=" + std::to_string(size) + " empty=" + (q.empty() ? "true" : "false"));
    if (items >= 0 && size > 0) {
      int v = q.get();
      say("consumer: got " + std::to_string(v));
      ++got;
    } else if (items < 0) {
      while (!q.empty()) say("consumer: got " + std::to_string(q.get()));
    }
  }
}

int main(int argc, char** argv) {
  int put_ms = argc > 1 ? std::atoi(argv[1]) : 3000;
  int poll_ms = argc > 2 ? std::atoi(argv[2]) : 1000;
  long items = argc > 3 ? std::atol(argv[3]) : -1;
  mpx::Queue<int> q(5);
  mpx::Process p(producer, q, put_ms, items);
  mpx::Process c(consumer, q, poll_ms, items);
  p.start();
  c.start();
  p.join();
  c.join();
  return (*p.exitcode() == 0 && *c.exitcode() == 0) ? 0 : 1;
}
