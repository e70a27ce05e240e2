// Seed 35: pid from the parent's side, getpid() and getppid() in the child.
#include <mpx/mpx.hpp>
#include <unistd.h>

#include <iostream>

void report() {
  std::cout << "child: getpid() = " << ::getpid() << ", getppid() = " << ::getppid() << std::endl;
}

int main() {
  std::cout << "parent: getpid() = " << ::getpid() << std::endl;
  mpx::Process p(report);
  p.start();
  std::cout << "parent: p.pid() = " << p.pid() << std::endl;
  p.join();
}
