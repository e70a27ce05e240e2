// Seed 12: exit codes of children that exit(1), return, return 1, throw, or
// are terminated. Prints "NAME.exitcode = CODE", one a line.
#include <mpx/mpx.hpp>

#include <chrono>
#include <iostream>
#include <stdexcept>
#include <thread>
#include <vector>

void exit_error() { mpx::exit(1); }
void exit_ok() {}
int return_value() { return 1; }  // the return value is ignored, as in Python
void raises() { throw std::runtime_error("There was an error!"); }
void terminated() { std::this_thread::sleep_for(std::chrono::seconds(30)); }

int main() {
  std::vector<mpx::Process> jobs;
  jobs.emplace_back(mpx::ProcessOptions().with_name("exit_error"), exit_error);
  jobs.emplace_back(mpx::ProcessOptions().with_name("exit_ok"), exit_ok);
  jobs.emplace_back(mpx::ProcessOptions().with_name("return_value"), return_value);
  jobs.emplace_back(mpx::ProcessOptions().with_name("raises"), raises);
  jobs.emplace_back(mpx::ProcessOptions().with_name("terminated"), terminated);
  for (auto& p : jobs) p.start();
  jobs.back().terminate();
  for (auto& p : jobs) p.join();
  for (auto& p : jobs) std::cout << p.name() << ".exitcode = " << *p.exitcode() << std::endl;
}
