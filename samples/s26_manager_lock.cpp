// Seed 26: a Lock obtained from a Manager, shared by processes.
//
//     lock = m.Lock()
//     each of 4 processes: 50 times { with lock: counter.value = counter.value + 1 }
//
// The read and the write are two separate calls to the server; only the
// manager's lock keeps another process from slipping in between.
#include <iostream>
#include <mutex>
#include <vector>

#include "mpx/manager.hpp"
#include "mpx/process.hpp"

int main() {
  mpx::Manager m;
  auto lock = m.Lock();
  auto counter = m.Value<int>(0);
  std::vector<mpx::Process> workers;
  for (int i = 0; i < 4; ++i) {
    workers.emplace_back([lock, counter]() mutable {
      for (int k = 0; k < 50; ++k) {
        std::lock_guard guard(lock);
        counter.set(counter.get() + 1);
      }
    });
  }
  for (auto& w : workers) w.start();
  for (auto& w : workers) w.join();
  std::cout << "counter = " << counter.get() << " (4 processes x 50 increments under the manager's Lock)" << std::endl;
  return 0;
}
