// Seed 09: named processes and one left with the default name Process-N.
#include <mpx/mpx.hpp>

#include <chrono>
#include <iostream>
#include <thread>

void show_name() { std::cout << mpx::current_process().name << " Starting" << std::endl; }

int main() {
  mpx::Process service(mpx::ProcessOptions().with_name("my_service"), show_name);
  mpx::Process worker_1(mpx::ProcessOptions().with_name("worker 1"), show_name);
  mpx::Process worker_2(show_name);  // default name
  // One at a time, so the output order is fixed.
  for (auto* p : {&worker_1, &worker_2, &service}) {
    p->start();
    p->join();
  }
}
