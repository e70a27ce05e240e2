// Seed 32: a child sets a global to 0; the parent still sees 100.
#include <mpx/mpx.hpp>

#include <iostream>

int x = 100;

void change() {
  x = 0;
  std::cout << "child: x = " << x << std::endl;
}

int main() {
  mpx::Process p(change);
  p.start();
  p.join();
  std::cout << "parent: x = " << x << std::endl;
}
