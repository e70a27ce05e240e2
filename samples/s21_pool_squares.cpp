// Seed 21: Pool(5).map(f, [1..10]) with f(x) = x*x gives [1, 4, 9, ..., 100], in order.
#include <mpx/mpx.hpp>

#include <iostream>
#include <ranges>

int f(int x) { return x * x; }

int main() {
  mpx::Pool pool(5);
  const auto squares = pool.map(f, std::views::iota(1, 11));
  std::cout << "[";
  for (std::size_t i = 0; i < squares.size(); ++i) std::cout << (i ? ", " : "") << squares[i];
  std::cout << "]\n";
}
