// Seed 10: a daemon sleeping 2 s, join(1) with a timeout, is_alive(); a
// non-daemon process. Run with "exit-early" to leave main while the daemon
// still runs: the library terminates it at exit (it never outlives main).
#include <mpx/mpx.hpp>

#include <chrono>
#include <iostream>
#include <string>
#include <thread>

void daemon_task() {
  std::cout << "Starting: " << mpx::current_process().name << " pid " << mpx::current_process().pid << std::endl;
  std::this_thread::sleep_for(std::chrono::seconds(2));
  std::cout << "Exiting : " << mpx::current_process().name << std::endl;
}

void non_daemon_task() {
  std::cout << "Starting: " << mpx::current_process().name << std::endl;
  std::cout << "Exiting : " << mpx::current_process().name << std::endl;
}

int main(int argc, char** argv) {
  bool exit_early = argc > 1 && std::string(argv[1]) == "exit-early";
  mpx::Process d(mpx::ProcessOptions().with_name("daemon").with_daemon(), daemon_task);
  mpx::Process n(mpx::ProcessOptions().with_name("non-daemon"), non_daemon_task);
  d.start();
  n.start();
  n.join();
  auto t0 = std::chrono::steady_clock::now();
  bool ended = d.join(std::chrono::seconds(1));
  double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::cout << "join(1) returned after " << waited << " s, ended=" << std::boolalpha << ended
            << ", d.is_alive()=" << d.is_alive() << std::endl;
  if (exit_early) {
    std::cout << "main exits, daemon pid " << d.pid() << std::endl;
    return 0;  // the atexit handler terminates the daemon
  }
  d.join();
  std::cout << "daemon exitcode " << *d.exitcode() << std::endl;
}
