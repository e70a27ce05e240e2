// Seed 02: a child puts a value on a Queue; the parent gets it after join.
//
//     def f(q): q.put([42, None, 'hello'])
//     q = Queue(); p = Process(target=f, args=(q,)); p.start(); p.join()
//     print(q.get())                      # [42, None, 'hello']
#include <iostream>
#include <optional>
#include <string>
#include <tuple>

#include "mpx/process.hpp"
#include "mpx/queue.hpp"

using Item = std::tuple<int, std::optional<int>, std::string>;

void f(mpx::Queue<Item> q) { q.put({42, std::nullopt, "hello"}); }

int main() {
  mpx::Queue<Item> q;
  mpx::Process p(f, q);
  p.start();
  p.join();  // safe before get: put has written the item to shared memory
  auto [number, nothing, text] = q.get();
  std::cout << "[" << number << ", " << (nothing ? std::to_string(*nothing) : "None") << ", '" << text << "']"
            << std::endl;
  return 0;
}
