// Seed 22: apply_async(func, args) returns an AsyncResult whose get() is the
// value; close(), then join(). join() before close() is an error.
#include <mpx/mpx.hpp>

#include <iostream>

int cube(int x) { return x * x * x; }

int main() {
  mpx::Pool pool(2);
  mpx::AsyncResult<int> result = pool.apply_async(cube, 3);
  std::cout << "get() = " << result.get() << "\n";
  try {
    pool.join();
  } catch (const mpx::PoolError& e) {
    std::cout << "join() before close(): " << e.what() << "\n";
  }
  pool.close();
  pool.join();
  std::cout << "closed and joined\n";
}
