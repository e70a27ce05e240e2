// Seed 37: multiprocessing.connection's Listener and Client. The parent
// listens on 127.0.0.1 (a free port) with an authkey; a child process
// connects with the same key, sends [1, 'hello', None] and raw bytes, and
// gets an answer. A third connection with a wrong key is refused on both
// sides. (Python's Listener and Client speak the same protocol: a python3
// `Client(('127.0.0.1', port), authkey=b'secret password')` could connect too.)
#include <iostream>
#include <optional>
#include <string>
#include <tuple>

#include "mpx/listener.hpp"
#include "mpx/process.hpp"

using namespace std::chrono_literals;
using Item = std::tuple<int, std::string, std::optional<int>>;

int main() {
  mpx::Listener listener(mpx::Address::tcp("127.0.0.1", 0), "secret password");
  const mpx::Address address = listener.address();

  mpx::Process client([address] {
    mpx::SocketConnection conn = mpx::Client(address, "secret password", 10s);
    conn.send(Item{1, "hello", std::nullopt});
    conn.send_bytes("raw bytes");
    auto reply = conn.recv_bytes();
    std::cout << "client got '" << std::string(reinterpret_cast<const char*>(reply.data()), reply.size()) << "'"
              << std::endl;
    try {
      (void)mpx::Client(address, "wrong password", 10s);
    } catch (const mpx::AuthenticationError&) {
      std::cout << "client with the wrong key: AuthenticationError" << std::endl;
    }
  });
  client.start();

  mpx::SocketConnection conn = listener.accept();
  auto [n, text, none] = conn.recv<Item>();
  std::cout << "listener got [" << n << ", '" << text << "', " << (none ? std::to_string(*none) : "None") << "]"
            << std::endl;
  auto raw = conn.recv_bytes();
  std::cout << "listener got " << raw.size() << " raw bytes" << std::endl;
  conn.send_bytes("thank you");
  bool refused = false;
  try {
    (void)listener.accept(10s);
  } catch (const mpx::AuthenticationError&) {
    refused = true;
  }
  client.join();  // the client prints first: one order of lines on every run
  if (refused) std::cout << "listener refused a client: AuthenticationError" << std::endl;
  std::cout << "client exitcode " << *client.exitcode() << std::endl;
  return 0;
}
