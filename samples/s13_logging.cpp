// Seed 13: log_to_stderr() and the INFO level show the lifecycle messages.
#include <mpx/mpx.hpp>

#include <iostream>

void worker() { std::cout << "Doing some work" << std::endl; }

int main() {
  mpx::log_to_stderr();
  mpx::get_logger()->set_level(spdlog::level::info);
  mpx::Process p(worker);
  p.start();
  p.join();
}
