// Seed 11: terminate() then join(); the printed form shows the state.
#include <mpx/mpx.hpp>

#include <chrono>
#include <iostream>
#include <thread>

void slow_worker() {
  std::cout << "Starting worker" << std::endl;
  std::this_thread::sleep_for(std::chrono::seconds(30));
  std::cout << "Finished worker" << std::endl;
}

int main() {
  std::cout << std::boolalpha;
  mpx::Process p(slow_worker);
  std::cout << "BEFORE: " << p << " " << p.is_alive() << std::endl;
  p.start();
  std::cout << "DURING: " << p << " " << p.is_alive() << std::endl;
  p.terminate();
  std::cout << "TERMINATED: " << p << " " << p.is_alive() << std::endl;
  p.join();
  std::cout << "JOINED: " << p << " " << p.is_alive() << std::endl;
}
