// Seed 04: Pool(processes=2).map(func, ("process in",)) returns a list of the
// function's results, in input order.
#include <mpx/mpx.hpp>

#include <iostream>
#include <string>
#include <vector>

std::string func(const std::string& msg) { return msg + " -> done"; }

int main() {
  mpx::Pool pool(2);
  const std::vector<std::string> results = pool.map(func, std::vector<std::string>{"process in"});
  for (const auto& line : results) std::cout << line << "\n";
  pool.close();
  pool.join();
}
