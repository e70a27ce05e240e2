// Seed 15: an object of a user class through a Queue; the worker calls a
// method on it; close() and join_thread() on the sending side.
//
//     class MyFancyClass: def __init__(self, name); def do_something(self): print(...)
//     def worker(q): obj = q.get(); obj.do_something()
//     q.put(MyFancyClass('Fancy Dan')); q.close(); q.join_thread(); p.join()
#include <iostream>
#include <string>

#include "mpx/process.hpp"
#include "mpx/queue.hpp"

class MyFancyClass {
 public:
  MyFancyClass() = default;
  explicit MyFancyClass(std::string name) : name_(std::move(name)) {}
  void do_something() const {
    std::cout << "Doing something fancy in " << mpx::current_process().name << " for " << name_ << "!" << std::endl;
  }
  // What makes a user type travel through a Queue (cereal's convention).
  template <class Archive>
  void serialize(Archive& ar) {
    ar(name_);
  }

 private:
  std::string name_;
};

void worker(mpx::Queue<MyFancyClass> q) {
  MyFancyClass obj = q.get();
  obj.do_something();
}

int main() {
  mpx::Queue<MyFancyClass> queue;
  mpx::Process p(worker, queue);
  p.start();
  queue.put(MyFancyClass("Fancy Dan"));
  // Wait for the worker to finish.
  queue.close();
  queue.join_thread();
  p.join();
  return *p.exitcode();
}
