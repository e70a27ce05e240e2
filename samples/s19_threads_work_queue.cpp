// Seed 19: threads of one process share a bounded work queue under a lock,
// with an exit flag. The same mpx::Queue and mpx::Lock that connect
// processes work between threads: three worker threads take five words
// from a Queue(10), each printing under the lock, until the exit flag is set.
#include <mpx/mpx.hpp>

#include <atomic>
#include <chrono>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

int main() {
  const std::vector<std::string> names{"Thread-1", "Thread-2", "Thread-3"};
  const std::vector<std::string> words{"One", "Two", "Three", "Four", "Five"};
  mpx::Queue<std::string> work(10);
  mpx::Lock queue_lock;  // guards the printing, as the tutorial's queueLock
  std::atomic<bool> exit_flag{false};

  std::vector<std::thread> threads;
  for (const auto& name : names) {
    threads.emplace_back([&, name] {
      {
        std::lock_guard guard(queue_lock);
        std::cout << "Starting " << name << std::endl;
      }
      while (!exit_flag.load()) {
        try {
          auto data = work.get(std::chrono::milliseconds(100));
          std::lock_guard guard(queue_lock);
          std::cout << name << " processing " << data << std::endl;
        } catch (const mpx::Empty&) {
          // Nothing yet: look at the exit flag again.
        }
      }
      std::lock_guard guard(queue_lock);
      std::cout << "Exiting " << name << std::endl;
    });
  }

  for (const auto& word : words) work.put(word);
  while (!work.empty()) std::this_thread::sleep_for(std::chrono::milliseconds(10));  // the tutorial's wait loop
  exit_flag = true;
  for (auto& t : threads) t.join();
  std::cout << "Exiting Main Thread" << std::endl;
}
