// Seed 16: consumers (Process subclasses) take callable Task objects from a
// JoinableQueue, put answers on a result Queue, call task_done(); one poison
// pill per consumer; tasks.join(); cpu_count() * 2 consumers.
//
//   s16_joinable_consumers [num_jobs] [task_ms]     (defaults: 10 jobs, 100 ms each)
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "mpx/process.hpp"
#include "mpx/queue.hpp"

// One line, one write(2): lines of concurrent processes never interleave.
void say(const std::string& line) {
  std::string s = line + "\n";
  [[maybe_unused]] auto n = ::write(1, s.data(), s.size());
}

int g_task_ms = 100;

struct Task {
  int a = 0, b = 0;
  std::string operator()() const {
    std::this_thread::sleep_for(std::chrono::milliseconds(g_task_ms));  // pretend to take time
    return std::to_string(a) + " * " + std::to_string(b) + " = " + std::to_string(a * b);
  }
  std::string str() const { return std::to_string(a) + " * " + std::to_string(b); }
  template <class Archive>
  void serialize(Archive& ar) {
    ar(a, b);
  }
};

// std::nullopt is the poison pill (Python's None).
using TaskQueue = mpx::JoinableQueue<std::optional<Task>>;

class Consumer : public mpx::Process {
 public:
  Consumer(TaskQueue tasks, mpx::Queue<std::string> results) : tasks_(tasks), results_(results) {}

 protected:
  void run() override {
    const std::string proc_name = mpx::current_process().name;
    for (;;) {
      std::optional<Task> next_task = tasks_.get();
      if (!next_task) {
        say(proc_name + ": Exiting");
        tasks_.task_done();
        break;
      }
      say(proc_name + ": " + next_task->str());
      std::string answer = (*next_task)();
      tasks_.task_done();
      results_.put(answer);
    }
  }

 private:
  TaskQueue tasks_;
  mpx::Queue<std::string> results_;
};

int main(int argc, char** argv) {
  int num_jobs = argc > 1 ? std::atoi(argv[1]) : 10;
  if (argc > 2) g_task_ms = std::atoi(argv[2]);

  TaskQueue tasks;
  mpx::Queue<std::string> results;

  // Start consumers.
  const int num_consumers = mpx::cpu_count() * 2;
  say("Creating " + std::to_string(num_consumers) + " consumers");
  std::vector<std::unique_ptr<Consumer>> consumers;
  for (int i = 0; i < num_consumers; ++i) consumers.push_back(std::make_unique<Consumer>(tasks, results));
  for (auto& w : consumers) w->start();

  // Enqueue jobs, then one poison pill for each consumer.
  for (int i = 0; i < num_jobs; ++i) tasks.put(Task{i, i});
  for (int i = 0; i < num_consumers; ++i) tasks.put(std::nullopt);

  // Wait for all of the tasks to finish.
  tasks.join();

  // Start printing results.
  for (int left = num_jobs; left > 0; --left) say("Result: " + results.get());
  for (auto& w : consumers) w->join();
  return 0;
}
