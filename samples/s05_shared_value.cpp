// Seed 05: a Value in shared memory, changed by a child.
//
//     num = Value('i', 10)
//     p = Process(target=f, args=(num,)); p.start(); p.join()   # f sets num.value = 20
//     print(num.value)                                          # 20
#include <iostream>

#include "mpx/process.hpp"
#include "mpx/sharedctypes.hpp"

void f(mpx::Value<int> num) { num.set_value(20); }

int main() {
  mpx::Value<int> num(10);
  mpx::Process p(f, num);
  p.start();
  p.join();
  std::cout << num.value() << std::endl;
  return 0;
}
