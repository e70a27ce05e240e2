#include <mpx/mpx.hpp>

#include <chrono>
#include <iostream>
#include <string>

struct Add {
  int a = 0, b = 0;
  template <class A>
  void serialize(A& ar) {
    ar(a, b);
  }
};

mpx::actors::Behavior adder(mpx::actors::Context&) {
  return {[](const Add& m) { return m.a + m.b; }};
}
MPX_REGISTER_ACTOR(adder);

int main() {
  mpx::Process child([] { mpx::exit(7); });
  child.start();
  child.join();
  auto round_trip = mpx::decode<std::string>(mpx::encode(std::string("installed")));
  int sum = 0;
  {
    mpx::actors::Host worker("consumer-worker");  // mpx::actors from the installed package
    sum = worker.spawn("adder", "adder-1").request<int>(Add{1, 2}).get(std::chrono::seconds(30));
  }
  std::cout << "consumer: child exitcode " << *child.exitcode() << ", " << round_trip << ", actor sum " << sum
            << std::endl;
  return *child.exitcode() == 7 && round_trip == "installed" && sum == 3 ? 0 : 1;
}
