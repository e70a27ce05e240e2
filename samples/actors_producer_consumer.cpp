// Actors: seed 16 (joinable consumers) with actors instead of a
// JoinableQueue. One "consumer" actor in each of mpx::cpu_count() worker
// hosts; the producer (main) requests every task from a consumer (round
// robin), gathers the answers, checks that every task was answered exactly
// once, then stops each consumer with a poison pill (after the tasks
// already queued) and shuts its host down: it exits 0.
//
//   actors_producer_consumer [--tasks N] [--task-ms MS]   (defaults: 100 tasks, 10 ms each)
//
// Consumers print "consumer-2: 7 * 8" when they take a task; main prints
// "Result: 7 * 8 = 56 (task 7, consumer-2)" for each answer, a summary line
// per consumer, "consumer-2: Exiting (normal)" once its consumer stopped on
// its pill and "host consumer-2 exited with 0". Exits 1 when a check fails.
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <iostream>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "mpx/actors.hpp"
#include "sample_support.hpp"

namespace ma = mpx::actors;
using namespace std::chrono_literals;

namespace {

using mpx::samples::say;

struct Task {
  std::int32_t id = 0;
  std::int64_t a = 0, b = 0;
  std::int32_t ms = 0;  // pretend to take this long
  [[nodiscard]] std::string str() const { return std::to_string(a) + " * " + std::to_string(b); }
  template <class A>
  void serialize(A& ar) {
    ar(id, a, b, ms);
  }
};
struct Answer {
  std::int32_t task = 0;
  std::int64_t a = 0, b = 0, product = 0;
  std::string consumer;  // the host that computed it
  std::int32_t pid = 0;
  template <class A>
  void serialize(A& ar) {
    ar(task, a, b, product, consumer, pid);
  }
};

ma::Behavior consumer(ma::Context& self) {
  return {
      [&self](const Task& task) {
        say(self.host() + ": " + task.str());
        std::this_thread::sleep_for(std::chrono::milliseconds(task.ms));
        return Answer{task.id, task.a, task.b, task.a * task.b, self.host(), static_cast<std::int32_t>(::getpid())};
      },
  };
}
MPX_REGISTER_ACTOR(consumer);

int usage(const char* argv0) {
  std::cerr << "usage: " << argv0 << " [--tasks N] [--task-ms MS]   (defaults: 100 tasks, 10 ms)\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  int num_tasks = 100;
  int task_ms = 10;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    try {
      if (arg == "--tasks" && i + 1 < argc) {
        num_tasks = std::stoi(argv[++i]);
      } else if (arg == "--task-ms" && i + 1 < argc) {
        task_ms = std::stoi(argv[++i]);
      } else {
        return usage(argv[0]);
      }
    } catch (const std::exception&) {
      return usage(argv[0]);
    }
  }
  if (num_tasks < 0 || task_ms < 0) return usage(argv[0]);

  int failures = 0;
  auto check = [&](bool ok, const std::string& what) {
    if (!ok) {
      std::cerr << "actors_producer_consumer: check failed: " << what << std::endl;
      ++failures;
    }
  };

  try {
    // Start consumers: one host (a worker process) with one consumer actor each.
    const int num_consumers = mpx::cpu_count();
    say("Creating " + std::to_string(num_consumers) + " consumers");
    std::vector<ma::Host> hosts;
    std::vector<ma::ActorRef> consumers;
    std::vector<ma::Monitor> monitors;
    for (int i = 1; i <= num_consumers; ++i) {
      hosts.emplace_back("consumer-" + std::to_string(i));
      consumers.push_back(hosts.back().spawn("consumer", "consumer"));
      monitors.push_back(ma::monitor(consumers.back()));
    }

    // Request every task (round robin); the requests are all in flight at once.
    std::vector<ma::Response<Answer>> pending;
    pending.reserve(static_cast<std::size_t>(num_tasks));
    for (int i = 0; i < num_tasks; ++i) {
      const Task task{i, i, i + 1, task_ms};
      pending.push_back(consumers[static_cast<std::size_t>(i % num_consumers)].request<Answer>(task));
    }

    // Gather the answers.
    std::map<std::int32_t, int> answered;            // task -> answers
    std::map<std::string, int> per_consumer;         // host -> answers
    for (int i = 0; i < num_tasks; ++i) {
      const Answer answer = pending[static_cast<std::size_t>(i)].get(5min);
      say("Result: " + std::to_string(answer.a) + " * " + std::to_string(answer.b) + " = " +
          std::to_string(answer.product) + " (task " + std::to_string(answer.task) + ", " + answer.consumer + ")");
      ++answered[answer.task];
      ++per_consumer[answer.consumer];
      check(answer.task == i, "request " + std::to_string(i) + " was answered for task " + std::to_string(answer.task));
      check(answer.a == i && answer.b == i + 1 && answer.product == answer.a * answer.b,
            "task " + std::to_string(i) + " has a wrong answer");
      check(answer.pid != ::getpid(), "task " + std::to_string(i) + " was computed in main");
    }

    // Every task answered exactly once.
    int once = 0;
    for (int i = 0; i < num_tasks; ++i) {
      auto it = answered.find(i);
      const int n = it == answered.end() ? 0 : it->second;
      check(n == 1, "task " + std::to_string(i) + " answered " + std::to_string(n) + " times");
      once += n == 1;
    }
    check(answered.size() == static_cast<std::size_t>(num_tasks), "answers for unknown tasks");
    say("all " + std::to_string(num_tasks) + " tasks answered: " + std::to_string(once) + " exactly once");
    for (const auto& host : hosts)
      say(host.name() + " answered " + std::to_string(per_consumer[host.name()]) + " tasks");

    // One poison pill per consumer, then shut its host down.
    for (std::size_t i = 0; i < hosts.size(); ++i) {
      consumers[i].send(ma::PoisonPill{});
      const std::optional<ma::Down> down = monitors[i].wait(1min);
      say(hosts[i].name() + ": Exiting (" + (down ? std::string(ma::to_string(down->kind)) : "no Down") + ")");
      check(down && down->kind == ma::DownKind::normal, hosts[i].name() + "'s consumer did not stop normally");
      hosts[i].shutdown();
      const auto code = hosts[i].exitcode();
      say("host " + hosts[i].name() + " exited with " + (code ? std::to_string(*code) : std::string("?")));
      check(code == 0, "host " + hosts[i].name() + " did not exit 0");
    }
  } catch (const std::exception& e) {
    std::cerr << "actors_producer_consumer: " << e.what() << std::endl;
    return 1;
  }
  return failures == 0 ? 0 : 1;
}
