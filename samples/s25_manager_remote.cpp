// Seed 25: a Manager holding a Value, an Array and a list, changed by a
// child; the same manager served on a network address with an authentication
// key and used from another program.
//
//     s25_manager_remote                          the whole demo (re-runs itself as the other program)
//     s25_manager_remote --client HOST:PORT KEY   the other program: appends to the published list
//     s25_manager_remote --serve HOST:PORT KEY    a standalone server (serve_forever), for another host
//
// Output of the demo:
//     value: 3.14
//     array: [5, 1, 2, 3, 4, 5, 6, 7, 8, 9]
//     list: [changed by a child]
//     list: [changed by a child, changed by another program]
//     wrong key: refused (mpx::AuthenticationError)
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "mpx/logging.hpp"
#include "mpx/manager.hpp"
#include "mpx/process.hpp"

namespace {

template <class T>
std::string show(const std::vector<T>& v) {
  std::ostringstream out;
  out << "[";
  for (std::size_t i = 0; i < v.size(); ++i) out << (i ? ", " : "") << v[i];
  out << "]";
  return out.str();
}

// The other program: reaches the manager with the key, finds the list by name.
int client(const std::string& address, const std::string& key) {
  try {
    auto m = mpx::Manager::connect(address, key);
    auto l = m.lookup<mpx::ListProxy<std::string>>("list");
    l.append("changed by another program");
    return 0;
  } catch (const mpx::AuthenticationError&) {
    std::cout << "wrong key: refused (mpx::AuthenticationError)" << std::endl;
    return 3;
  }
}

// Runs this program again as the client; returns its exit code.
int run_client(const char* self, const std::string& address, const std::string& key) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::execl(self, self, "--client", address.c_str(), key.c_str(), static_cast<char*>(nullptr));
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 4 && std::strcmp(argv[1], "--client") == 0) return client(argv[2], argv[3]);
  if (argc == 4 && std::strcmp(argv[1], "--serve") == 0) {
    mpx::log_to_stderr(spdlog::level::info);
    mpx::Manager::serve_forever(argv[2], argv[3]);
  }

  const std::string key = "seed-25-key";
  mpx::Manager m({.address = "127.0.0.1:0", .authkey = key});
  auto value = m.Value<double>(0.0);
  auto array = m.Array<int>({0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  auto list = m.list<std::string>();
  m.publish("list", list);

  mpx::Process child([value, array, list]() mutable {
    value.set(3.14);
    array.set(0, 5);
    list.append("changed by a child");
  });
  child.start();
  child.join();
  std::cout << "value: " << value.get() << "\n"
            << "array: " << show(array.snapshot()) << "\n"
            << "list: " << show(list.snapshot()) << std::endl;

  if (run_client(argv[0], m.address(), key) != 0) return 1;
  std::cout << "list: " << show(list.snapshot()) << std::endl;
  if (run_client(argv[0], m.address(), "not-the-key") != 3) return 1;
  return 0;
}
