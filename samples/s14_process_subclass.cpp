// Seed 14: a subclass of Process overriding run().
#include <mpx/mpx.hpp>

#include <iostream>

class MyProcess : public mpx::Process {
 public:
  explicit MyProcess(int id) : id_(id) {}

 protected:
  void run() override {
    std::cout << "In " << mpx::current_process().name << " (id " << id_ << ", pid "
              << mpx::current_process().pid << ")" << std::endl;
  }

 private:
  int id_;
};

int main() {
  for (int i = 0; i < 3; ++i) {
    MyProcess p(i);
    p.start();
    p.join();
  }
}
