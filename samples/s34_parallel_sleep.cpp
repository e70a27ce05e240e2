// Seed 34: three processes sleeping 1, 2, 3 s: started together and joined
// after, the total is about 3 s; started and joined one at a time, about 6 s.
#include <mpx/mpx.hpp>

#include <chrono>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

void nap(int seconds) { std::this_thread::sleep_for(std::chrono::seconds(seconds)); }

int main(int argc, char** argv) {
  bool serial = argc > 1 && std::string(argv[1]) == "serial";
  auto t0 = std::chrono::steady_clock::now();
  std::vector<mpx::Process> jobs;
  for (int s = 1; s <= 3; ++s) jobs.emplace_back(nap, s);
  if (serial) {
    for (auto& p : jobs) {
      p.start();
      p.join();
    }
  } else {
    for (auto& p : jobs) p.start();
    for (auto& p : jobs) p.join();
  }
  double total = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << (serial ? "serial" : "parallel") << " total: " << total << " s" << std::endl;
}
