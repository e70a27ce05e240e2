#include <mpx/mpx.hpp>

#include <iostream>
#include <string>

int main() {
  mpx::Process child([] { mpx::exit(7); });
  child.start();
  child.join();
  auto round_trip = mpx::decode<std::string>(mpx::encode(std::string("installed")));
  std::cout << "consumer: child exitcode " << *child.exitcode() << ", " << round_trip << std::endl;
  return *child.exitcode() == 7 && round_trip == "installed" ? 0 : 1;
}
