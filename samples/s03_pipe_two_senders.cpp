// Seed 03: two children send on the same end of one Pipe; the parent receives once.
//
//     def f(conn): conn.send([42, None, 'hello']); conn.close()
//     parent_conn, child_conn = Pipe()
//     two Processes run f(child_conn); print(parent_conn.recv())
//
// The parent gets one whole message from one of the two children; the other
// stays unread in the pipe. Each message here is 32 KiB of one letter, so a
// torn message (bytes of both children) would show.
#include <iostream>
#include <string>

#include "mpx/pipe.hpp"
#include "mpx/process.hpp"

void f(mpx::Connection conn, char who) {
  conn.send(std::string(32 * 1024, who));
  conn.close();
}

int main() {
  auto [parent_conn, child_conn] = mpx::Pipe();
  mpx::Process a(f, child_conn, 'A');
  mpx::Process b(f, child_conn, 'B');
  a.start();
  b.start();
  auto message = parent_conn.recv<std::string>();
  bool whole = message.size() == 32 * 1024 && message.find_first_not_of(message[0]) == std::string::npos;
  std::cout << "received " << message.size() << " bytes from child " << message[0] << (whole ? ", whole" : ", TORN")
            << std::endl;
  a.join();
  b.join();
  std::cout << "unread messages waiting: " << (parent_conn.poll() ? "yes" : "no") << std::endl;
  return whole ? 0 : 1;
}
