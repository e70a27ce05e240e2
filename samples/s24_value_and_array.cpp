// Seed 24: a Value('d') and an Array('i', range(10)) in shared memory,
// changed by a child; the parent sees 3.14 and [5, 1, 2, ..., 9].
//
//     def f(n, a):
//         n.value = 3.14
//         a[0] = 5
#include <iostream>
#include <ranges>

#include "mpx/process.hpp"
#include "mpx/sharedctypes.hpp"

void f(mpx::Value<double> n, mpx::Array<int> a) {
  n.set_value(3.14);
  a.set(0, 5);
}

int main() {
  mpx::Value<double> num(0.0);
  mpx::Array<int> arr(std::views::iota(0, 10));
  mpx::Process p(f, num, arr);
  p.start();
  p.join();
  std::cout << num.value() << "\n[";
  auto values = arr.to_vector();  // Python: arr[:]
  for (std::size_t i = 0; i < values.size(); ++i) std::cout << (i ? ", " : "") << values[i];
  std::cout << "]" << std::endl;
  return 0;
}
