// Seed 36: Pool(2).apply_async(Foo, (i,), callback=Bar) for ten tasks; close();
// join(). The callback runs in the parent with each result; apply() runs the
// tasks one after another, apply_async() runs them in parallel.
#include <mpx/mpx.hpp>

#include <unistd.h>

#include <chrono>
#include <iostream>
#include <thread>
#include <tuple>

int Foo(int i) {
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  return i;
}

int main() {
  const pid_t parent = ::getpid();
  mpx::Pool pool(2);

  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 4; ++i) (void)pool.apply(Foo, i);
  const double serial = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 10; ++i) {
    (void)pool.apply_async(Foo, std::tuple{i}, {.callback = [parent](const int& result) {
                                                  std::cout << "Bar(" << result << ") in "
                                                            << (::getpid() == parent ? "parent" : "child") << "\n";
                                                },
                                                .error_callback = {}});
  }
  pool.close();
  pool.join();
  const double parallel = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "apply x4: " << serial << " s\n";
  std::cout << "apply_async x10 on 2 workers: " << parallel << " s\n";
}
