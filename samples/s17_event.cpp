// Seed 17: an Event across processes. One process blocks in wait(), another
// in wait(2 s); the parent sets the event after 3 s. The timed waiter gives
// up after about 2 s and sees false; the blocked one wakes and sees true.
#include <chrono>
#include <cstdio>
#include <thread>

#include "mpx/event.hpp"
#include "mpx/process.hpp"

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

void say(const char* line) {
  std::printf("%s\n", line);
  std::fflush(stdout);
}

void wait_for_event(mpx::Event e) {
  say("wait_for_event: starting");
  e.wait();
  std::printf("wait_for_event: e.is_set() -> %s\n", e.is_set() ? "true" : "false");
  std::fflush(stdout);
}

void wait_for_event_timeout(mpx::Event e, std::chrono::seconds t) {
  say("wait_for_event_timeout: starting");
  auto t0 = Clock::now();
  (void)e.wait(t);
  std::printf("wait_for_event_timeout: e.is_set() -> %s (waited %.2f s)\n", e.is_set() ? "true" : "false",
              since(t0));
  std::fflush(stdout);
}

}  // namespace

int main() {
  mpx::Event e;
  mpx::Process w1(mpx::ProcessOptions().with_name("block"), wait_for_event, e);
  mpx::Process w2(mpx::ProcessOptions().with_name("nonblock"), wait_for_event_timeout, e, std::chrono::seconds(2));
  w1.start();
  w2.start();
  std::this_thread::sleep_for(3s);
  e.set();
  say("main: event is set");
  w1.join();
  w2.join();
  return 0;
}
