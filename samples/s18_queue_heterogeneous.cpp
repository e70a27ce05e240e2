// Seed 18: a child puts [42, None, 'hello'] on a Queue; the parent gets it intact.
// In C++ a heterogeneous list is a tuple (or a struct, or a vector of variants).
#include <iostream>
#include <optional>
#include <string>
#include <tuple>
#include <variant>
#include <vector>

#include "mpx/process.hpp"
#include "mpx/queue.hpp"

using Mixed = std::vector<std::variant<std::monostate, std::int64_t, std::string>>;

std::string show(const Mixed& list) {
  std::string out = "[";
  for (std::size_t i = 0; i < list.size(); ++i) {
    if (i) out += ", ";
    if (std::holds_alternative<std::monostate>(list[i])) out += "None";
    if (auto* n = std::get_if<std::int64_t>(&list[i])) out += std::to_string(*n);
    if (auto* s = std::get_if<std::string>(&list[i])) out += "'" + *s + "'";
  }
  return out + "]";
}

int main() {
  mpx::Queue<Mixed> q;
  mpx::Process p([q]() mutable { q.put(Mixed{std::int64_t{42}, std::monostate{}, std::string("hello")}); });
  p.start();
  std::cout << show(q.get()) << std::endl;
  p.join();
  return 0;
}
