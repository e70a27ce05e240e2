// Seed 08: five processes started in a loop, each with its own argument.
#include <mpx/mpx.hpp>

#include <iostream>
#include <vector>

void worker(int i) { std::cout << "Worker: " << i << std::endl; }

int main() {
  std::vector<mpx::Process> jobs;
  for (int i = 0; i < 5; ++i) {
    jobs.emplace_back(worker, i);
    jobs.back().start();
  }
  for (auto& p : jobs) p.join();
}
