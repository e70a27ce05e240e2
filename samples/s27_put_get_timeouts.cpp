// Seed 27: put(obj, block, timeout) and get(block, timeout): blocking,
// non-blocking and timed variants; Full and Empty exactly when Python raises them.
#include <chrono>
#include <iostream>
#include <thread>

#include "mpx/process.hpp"
#include "mpx/queue.hpp"

using namespace std::chrono_literals;

template <class F>
void attempt(const char* what, F f) {
  auto t0 = std::chrono::steady_clock::now();
  std::string outcome = "ok";
  try {
    f();
  } catch (const mpx::Full&) {
    outcome = "Full";
  } catch (const mpx::Empty&) {
    outcome = "Empty";
  }
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  std::cout << what << ": " << outcome << (ms >= 100 ? " after ~" + std::to_string(ms / 100 * 100) + " ms" : "")
            << std::endl;
}

int main() {
  mpx::Queue<int> q(2);
  attempt("get(block=False) on empty", [&] { (void)q.get(false); });
  attempt("get_nowait() on empty", [&] { (void)q.get_nowait(); });
  attempt("get(block=True, timeout=0.5) on empty", [&] { (void)q.get(true, 500ms); });
  attempt("put(1)", [&] { q.put(1); });
  attempt("put(2, block=False)", [&] { q.put(2, false); });
  attempt("put(3, block=False) on full", [&] { q.put(3, false); });
  attempt("put_nowait(3) on full", [&] { q.put_nowait(3); });
  attempt("put(3, block=True, timeout=0.5) on full", [&] { q.put(3, true, 500ms); });
  // A child makes room after 200 ms: the timed put succeeds then.
  mpx::Process p([q]() mutable {
    std::this_thread::sleep_for(200ms);
    (void)q.get();
  });
  p.start();
  attempt("put(3, block=True, timeout=5) while a child gets one", [&] { q.put(3, true, 5s); });
  p.join();
  attempt("get()", [&] { std::cout << "  value " << q.get() << std::endl; });
  attempt("get(timeout=1)", [&] { std::cout << "  value " << q.get(1s) << std::endl; });
  attempt("get(block=False) on empty again", [&] { (void)q.get(false); });
  return 0;
}
