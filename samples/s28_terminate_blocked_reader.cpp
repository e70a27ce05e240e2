// Seed 28: a writer puts 'A', 'B', 'C' with random pauses; a reader loops
// forever on get(); the parent joins the writer, then terminates the reader.
// Terminating a process blocked in get() leaves the queue usable: the parent
// then puts and gets through the same queue, and a new reader works.
//
// (The reader acknowledges each letter on a second queue so that the parent
// terminates it only once it has printed all three, which Python's version
// leaves to chance.)
#include <unistd.h>

#include <chrono>
#include <random>
#include <string>
#include <thread>

#include "mpx/process.hpp"
#include "mpx/queue.hpp"

void say(const std::string& line) {
  std::string s = line + "\n";
  [[maybe_unused]] auto n = ::write(1, s.data(), s.size());
}

void write_letters(mpx::Queue<std::string> q) {
  std::mt19937 rng(std::random_device{}());
  for (const char* value : {"A", "B", "C"}) {
    say("Put " + std::string(value) + " to queue...");
    q.put(value);
    std::this_thread::sleep_for(std::chrono::milliseconds(rng() % 300));
  }
}

void read_forever(mpx::Queue<std::string> q, mpx::Queue<std::string> acks) {
  for (;;) {
    std::string value = q.get();  // blocks here when terminated
    say("Get " + value + " from queue.");
    acks.put(value);
  }
}

int main() {
  mpx::Queue<std::string> q;
  mpx::Queue<std::string> acks;
  mpx::Process writer(write_letters, q);
  mpx::Process reader(read_forever, q, acks);
  writer.start();
  reader.start();
  writer.join();
  for (int i = 0; i < 3; ++i) (void)acks.get();
  reader.terminate();  // blocked in get()
  reader.join();
  say("reader exitcode " + std::to_string(*reader.exitcode()));

  q.put("D");
  say("after terminate, the parent gets " + q.get() + " back");
  mpx::Process reader2(read_forever, q, acks);
  reader2.start();
  q.put("E");
  say("a new reader acknowledged " + acks.get());
  reader2.terminate();
  reader2.join();
  return 0;
}
