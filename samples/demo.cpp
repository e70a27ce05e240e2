// The demo: starts several processes that end in different ways and reports
// each exit code, as a supervisor would. (The actors issue replaces it with
// the flagship service.)
#include <mpx/mpx.hpp>

#include <chrono>
#include <iostream>
#include <stdexcept>
#include <thread>
#include <vector>

int main() {
  mpx::log_to_stderr(spdlog::level::info);
  std::cout << "mpx demo: " << mpx::cpu_count() << " CPUs, main pid " << mpx::current_process().pid << std::endl;
  std::vector<mpx::Process> workers;
  workers.emplace_back(mpx::ProcessOptions().with_name("worker-ok"), [] {
    std::cout << "  worker-ok: computing in pid " << mpx::current_process().pid << std::endl;
  });
  workers.emplace_back(mpx::ProcessOptions().with_name("worker-exit-3"), [] { mpx::exit(3); });
  workers.emplace_back(mpx::ProcessOptions().with_name("worker-throws"),
                       [] { throw std::runtime_error("simulated failure"); });
  workers.emplace_back(mpx::ProcessOptions().with_name("worker-hangs"),
                       [] { std::this_thread::sleep_for(std::chrono::hours(1)); });
  for (auto& w : workers) w.start();
  for (auto& w : workers) {
    if (!w.join(std::chrono::milliseconds(500))) {
      std::cout << "  " << w.name() << " still running after 0.5 s: terminate()" << std::endl;
      w.terminate();
      w.join();
    }
  }
  std::cout << "exit codes:" << std::endl;
  for (auto& w : workers) std::cout << "  " << w << std::endl;
}
