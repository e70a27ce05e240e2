// Seed 01: Process(target=func, args=(12,)), start(), join().
#include <mpx/mpx.hpp>

#include <iostream>

void func(int param) { std::cout << "Process param : " << param << std::endl; }

int main() {
  mpx::Process p(func, 12);
  p.start();
  p.join();
  std::cout << "joined, exitcode " << *p.exitcode() << std::endl;
}
