// Seed 30: a child sends [42, None, 'hello'] and then loops on recv(); the
// parent receives it, sends '666', and terminates the child. Both directions
// work on one pipe. (The child answers what it received, so the parent can
// show that the '666' arrived before it terminates the child.)
#include <iostream>
#include <optional>
#include <string>
#include <tuple>

#include "mpx/pipe.hpp"
#include "mpx/process.hpp"

using Item = std::tuple<int, std::optional<int>, std::string>;

void child(mpx::Connection conn) {
  conn.send(Item{42, std::nullopt, "hello"});
  for (;;) {
    auto got = conn.recv<std::string>();
    conn.send(std::string("child received '" + got + "'"));
  }
}

int main() {
  auto [parent_conn, child_conn] = mpx::Pipe();
  mpx::Process p(child, child_conn);
  p.start();
  auto [n, none, text] = parent_conn.recv<Item>();
  std::cout << "parent received [" << n << ", " << (none ? std::to_string(*none) : "None") << ", '" << text << "']"
            << std::endl;
  parent_conn.send(std::string("666"));
  std::cout << parent_conn.recv<std::string>() << std::endl;
  p.terminate();
  p.join();
  std::cout << "child exitcode " << *p.exitcode() << std::endl;
  return 0;
}
