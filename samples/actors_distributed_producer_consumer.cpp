// Nodes: one producer node, two consumer nodes (each its own process tree,
// here on 127.0.0.1) whose consumer actors live in a supervised host. The
// producer requests every task from a consumer (round robin); midway it
// SIGKILLs consumer node 1 (its whole process group); requests to it fail at
// once with NodeDown and the producer hands those tasks to the other node.
//
//   actors_distributed_producer_consumer [--tasks N] [--kill-after K] [--netns]   (defaults: 40, 15)
//
// Prints "task 7 ran on consumer-2 (pid 4242)" per task, "node consumer-1
// killed after task 15", "task 16 moved from consumer-1 to consumer-2: ..."
// for each task that had to move, and "all 40 tasks done, each once" at the
// end. Exits 1 when a task is lost or done twice.
//
// --netns (root only; exit 2 otherwise): as on separate machines. Each node
// runs in a network namespace of its own (producer, consumer-1, consumer-2),
// joined by veth links to a bridge, with addresses 10.200.20.1-3 (the tests'
// helper tests/support/netns.hpp makes them; nothing is added to the caller's
// namespace). A consumer node's process enters its namespace before it makes
// its Node; this process enters the producer's. Prints "namespaces: <names>"
// first, and " in net:[<inode>]" (the consumer's network namespace) after
// each task line. The namespaces are deleted at the end, also on failure.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mpx/actors.hpp"
#include "../tests/support/netns.hpp"

namespace ma = mpx::actors;
using namespace std::chrono_literals;

struct Task {
  int id = 0;
  template <class A>
  void serialize(A& ar) {
    ar(id);
  }
};
struct Done {
  int id = 0;
  std::string node;
  int pid = 0;
  std::string netns;  // "net:[<inode>]" of the process that ran the task
  template <class A>
  void serialize(A& ar) {
    ar(id, node, pid, netns);
  }
};

std::string own_netns() {
  char buf[64] = {};
  const ssize_t n = ::readlink("/proc/self/ns/net", buf, sizeof buf - 1);
  return n > 0 ? std::string(buf, static_cast<std::size_t>(n)) : "?";
}

ma::Behavior consumer(ma::Context&, std::string node) {
  return {[node](const Task& t) { return Done{t.id, node, static_cast<int>(::getpid()), own_netns()}; }};
}
MPX_REGISTER_ACTOR(consumer);

namespace {
constexpr const char* kSecret = "sample-secret-change-me";

// A consumer node in its own process group (so that killing the group kills
// the node and its hosts), in network namespace `netns` if given: it reports
// its port through `fd` and runs until killed.
pid_t start_consumer_node(const std::string& name, const std::string& address, const std::string& netns,
                          int& port_fd) {
  int fds[2];
  if (::pipe(fds) != 0) return -1;
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    ::setpgid(0, 0);
    try {
      if (!netns.empty()) mpx::test::NetNamespaces::enter(netns);  // before the Node: it listens in there
      ma::Node node(ma::NodeOptions{}.with_name(name).with_address(address).with_secret(kSecret));
      ma::Supervisor sup(name + "-sup", ma::SupervisorOptions(),
                         {ma::ChildSpec::host(name + "-workers", ma::HostOptions(),
                                              {ma::ActorSpec::make("consumer", "consumer", name)})});
      const std::uint16_t port = node.port();
      if (::write(fds[1], &port, sizeof port) != sizeof port) ::_exit(3);
      ::pause();  // until the producer ends us
    } catch (const std::exception& e) {
      std::fprintf(stderr, "%s: %s\n", name.c_str(), e.what());
    }
    ::_exit(2);
  }
  ::close(fds[1]);
  port_fd = fds[0];
  return pid;
}

std::uint16_t read_port(int fd) {
  std::uint16_t port = 0;
  if (::read(fd, &port, sizeof port) != sizeof port) port = 0;
  ::close(fd);
  return port;
}

// Kills and reaps the consumer nodes' process groups, also when main fails.
struct ConsumerNodes {
  std::vector<pid_t> pids;
  ConsumerNodes() = default;
  ConsumerNodes(const ConsumerNodes&) = delete;
  ConsumerNodes& operator=(const ConsumerNodes&) = delete;
  ~ConsumerNodes() {
    for (pid_t pid : pids) {
      if (pid <= 0) continue;
      ::kill(-pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }
};
}  // namespace

int main(int argc, char** argv) {
  int tasks = 40, kill_after = 15;
  bool netns = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--netns") netns = true;
    if (a == "--tasks" && i + 1 < argc) tasks = std::stoi(argv[++i]);
    if (a == "--kill-after" && i + 1 < argc) kill_after = std::stoi(argv[++i]);
  }
  if (netns && ::geteuid() != 0) {
    std::fprintf(stderr, "--netns needs root (it makes network namespaces)\n");
    return 2;
  }
  std::cout.setf(std::ios::unitbuf);
  try {
    // Namespace 0: the producer (this process); 1 and 2: the consumer nodes.
    std::optional<mpx::test::NetNamespaces> net;
    if (netns) {
      net.emplace(3, 20);
      std::cout << "namespaces: " << net->name(0) << " " << net->name(1) << " " << net->name(2) << "\n";
    }
    const auto address = [&](int i) { return net ? net->address(i) : std::string("127.0.0.1"); };
    const std::vector<std::string> names{"consumer-1", "consumer-2"};
    ConsumerNodes nodes;
    std::vector<std::uint16_t> ports;
    // Before this process becomes a node: the children are their own trees.
    for (std::size_t i = 0; i < names.size(); ++i) {
      const int index = static_cast<int>(i) + 1;
      int fd = -1;
      nodes.pids.push_back(start_consumer_node(names[i], address(index), net ? net->name(index) : "", fd));
      ports.push_back(fd < 0 ? 0 : read_port(fd));
    }
    if (net) mpx::test::NetNamespaces::enter(net->name(0));  // still one thread: the whole process moves
    int status = 1;
    {
      ma::Node producer(ma::NodeOptions{}.with_name("producer").with_address(address(0)).with_secret(kSecret));
      std::vector<ma::ActorRef> consumers;
      bool ok = true;
      for (std::size_t i = 0; i < names.size(); ++i) {
        if (ports[i] == 0) {
          std::cout << names[i] << " did not start\n";
          ok = false;
          break;
        }
        const std::string peer = producer.connect(address(static_cast<int>(i) + 1), ports[i], 10s);
        consumers.push_back(producer.actor(peer, names[i] + "-workers", "consumer"));
      }
      std::map<int, int> done_count;
      for (int id = 0; ok && id < tasks; ++id) {
        if (id == kill_after) {
          ::kill(-nodes.pids[0], SIGKILL);
          std::cout << "node consumer-1 killed after task " << id - 1 << "\n";
        }
        std::size_t pick = static_cast<std::size_t>(id) % consumers.size();
        for (std::size_t attempt = 0; attempt < consumers.size(); ++attempt) {
          try {
            Done d = consumers[pick].request<Done>(Task{id}).get(10s);
            std::cout << "task " << d.id << " ran on " << d.node << " (pid " << d.pid << ")"
                      << (net ? " in " + d.netns : "") << "\n";
            ++done_count[d.id];
            break;
          } catch (const ma::NodeDown& e) {
            const std::size_t next = (pick + 1) % consumers.size();
            std::cout << "task " << id << " moved from " << names[pick] << " to " << names[next] << ": "
                      << e.reason() << "\n";
            pick = next;
          }
        }
      }
      for (int id = 0; ok && id < tasks; ++id)
        if (done_count[id] != 1) {
          std::cout << "task " << id << " was done " << done_count[id] << " times\n";
          ok = false;
        }
      if (ok) std::cout << "all " << tasks << " tasks done, each once\n";
      status = ok ? 0 : 1;
    }
    return status;  // the consumer nodes are killed, then the namespaces deleted
  } catch (const std::exception& e) {
    std::cout << "failed: " << e.what() << "\n";
    return 1;
  }
}
