// Network namespaces for tests (root only): `count` namespaces, each with one
// veth end (address 10.200.<subnet>.<i+1>/24) whose other end sits on a
// bridge in a private "switch" namespace. Nothing is added to the test's own
// namespace, so traffic only ever goes to addresses assigned here. Names carry
// the test's pid (parallel runs do not collide); the destructor deletes every
// namespace (their veths and the bridge go with them), also on failure.
//
//     mpx::test::NetNamespaces net(2);
//     mpx::test::Child b([&] { mpx::test::NetNamespaces::enter(net.name(1)); ... });
//     net.cut(1);       // ip link set <its switch port> down
//     net.restore(1);
#pragma once

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "test_support.hpp"

namespace mpx::test {

class NetNamespaces {
 public:
  explicit NetNamespaces(int count, int subnet = 1) : subnet_(subnet) {
    const std::string tag = std::to_string(::getpid());
    switch_ = "mpxsw" + tag;
    try {
      ip({"netns", "add", switch_});
      ip({"-n", switch_, "link", "add", "br0", "type", "bridge"});
      ip({"-n", switch_, "link", "set", "br0", "up"});
      for (int i = 0; i < count; ++i) {
        const std::string ns = "mpxn" + tag + "-" + std::to_string(i);
        const std::string inner = "v" + tag + "i" + std::to_string(i);
        const std::string outer = "v" + tag + "o" + std::to_string(i);
        ip({"netns", "add", ns});
        names_.push_back(ns);
        ports_.push_back(outer);
        ip({"link", "add", inner, "type", "veth", "peer", "name", outer});
        ip({"link", "set", inner, "netns", ns});
        ip({"link", "set", outer, "netns", switch_});
        ip({"-n", switch_, "link", "set", outer, "master", "br0"});
        ip({"-n", switch_, "link", "set", outer, "up"});
        ip({"-n", ns, "addr", "add", address(i) + "/24", "dev", inner});
        ip({"-n", ns, "link", "set", inner, "up"});
        ip({"-n", ns, "link", "set", "lo", "up"});
      }
    } catch (...) {
      remove();
      throw;
    }
  }
  NetNamespaces(const NetNamespaces&) = delete;
  NetNamespaces& operator=(const NetNamespaces&) = delete;
  ~NetNamespaces() { remove(); }

  [[nodiscard]] const std::string& name(int i) const { return names_.at(static_cast<std::size_t>(i)); }
  [[nodiscard]] std::string address(int i) const {
    return "10.200." + std::to_string(subnet_) + "." + std::to_string(i + 1);
  }
  // Cuts namespace i off the switch (its packets are lost, as on a pulled cable).
  void cut(int i) const { ip({"-n", switch_, "link", "set", ports_.at(static_cast<std::size_t>(i)), "down"}); }
  void restore(int i) const { ip({"-n", switch_, "link", "set", ports_.at(static_cast<std::size_t>(i)), "up"}); }

  // Moves the calling thread (in a test child: the process) into namespace `name`.
  static void enter(const std::string& name) {
    const int fd = ::open(("/var/run/netns/" + name).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) throw std::runtime_error("cannot open netns " + name);
    const int rc = ::setns(fd, CLONE_NEWNET);
    ::close(fd);
    if (rc != 0) throw std::runtime_error("setns " + name + " failed");
  }

 private:
  static void ip(std::vector<std::string> args) {
    args.insert(args.begin(), "/usr/sbin/ip");  // run_program takes a path
    auto result = run_program(args, std::chrono::seconds(20));
    if (result.exit_code != 0) {
      std::string line;
      for (auto& a : args) line += a + " ";
      throw std::runtime_error("'" + line + "' failed: " + result.err);
    }
  }
  void remove() noexcept {
    for (auto it = names_.rbegin(); it != names_.rend(); ++it) {
      try {
        ip({"netns", "del", *it});
      } catch (...) {
      }
    }
    names_.clear();
    try {
      ip({"netns", "del", switch_});
    } catch (...) {
    }
  }

  int subnet_;
  std::string switch_;
  std::vector<std::string> names_;
  std::vector<std::string> ports_;
};

}  // namespace mpx::test
