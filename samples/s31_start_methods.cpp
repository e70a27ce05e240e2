// Seed 31: the two ways to define the child's work (a target function, a
// subclass with run()), and a start method that does not fork the caller:
// with "forkserver", workers are forked by a clean helper process started
// at the top of main, before any thread exists.
#include <mpx/mpx.hpp>

#include <iostream>
#include <string>

void greet(std::string who, int n) {
  std::cout << "target: hello " << who << " #" << n << " from " << mpx::current_process().name << std::endl;
}
MPX_REGISTER_FUNCTION(greet);

class Greeter : public mpx::Process {
 protected:
  void run() override { std::cout << "run(): hello from " << mpx::current_process().name << std::endl; }
};

int main(int argc, char** argv) {
  bool forkserver = argc > 1 && std::string(argv[1]) == "forkserver";
  if (forkserver) mpx::set_start_method(mpx::StartMethod::forkserver);

  mpx::Process by_target(greet, std::string("world"), 1);
  by_target.start();
  by_target.join();

  if (!forkserver) {  // run() overrides need the fork start method
    Greeter by_subclass;
    by_subclass.start();
    by_subclass.join();
  }
  std::cout << "start method: " << (forkserver ? "forkserver" : "fork") << ", exitcode "
            << *by_target.exitcode() << std::endl;
}
