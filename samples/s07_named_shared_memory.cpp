// Seed 07: named shared memory between unrelated programs.
//
//   s07_named_shared_memory write NAME   creates /dev/shm/NAME (256 bytes),
//       sets byte 0 to 0xab, prints "ready: NAME", then waits until stdin
//       closes or SIGTERM/SIGINT arrives; then closes and unlinks it.
//   s07_named_shared_memory read NAME    attaches to NAME, prints
//       "buf[0] = 0xab", closes.
//
// Either side may be Python instead (multiprocessing.shared_memory.
// SharedMemory("NAME")) or any C program using shm_open("/NAME").
#include <poll.h>
#include <signal.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include <cstdio>
#include <iostream>
#include <string>

#include "mpx/shared_memory.hpp"

namespace {

sigset_t stop_signals() {
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGTERM);
  sigaddset(&stop, SIGINT);
  return stop;
}

// Blocks until stdin reaches EOF or SIGTERM/SIGINT arrives (they must be
// blocked already, so that one sent right after "ready" is not lost).
void wait_until_told_to_stop() {
  sigset_t stop = stop_signals();
  int sfd = ::signalfd(-1, &stop, SFD_CLOEXEC);
  pollfd fds[2] = {{STDIN_FILENO, POLLIN, 0}, {sfd, POLLIN, 0}};
  for (;;) {
    if (::poll(fds, 2, -1) < 0) continue;
    if (fds[1].revents) break;  // a stop signal
    if (fds[0].revents) {
      char buf[256];
      if (::read(STDIN_FILENO, buf, sizeof buf) <= 0) break;  // EOF (or error)
    }
  }
  ::close(sfd);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3 || (std::string(argv[1]) != "write" && std::string(argv[1]) != "read")) {
    std::cerr << "usage: " << argv[0] << " write|read NAME\n";
    return 2;
  }
  const std::string name = argv[2];
  try {
    if (std::string(argv[1]) == "write") {
      sigset_t stop = stop_signals();
      ::sigprocmask(SIG_BLOCK, &stop, nullptr);
      mpx::SharedMemory shm(name, /*create=*/true, 256);
      shm.buf()[0] = std::byte{0xab};
      std::cout << "ready: " << shm.name() << " (" << shm.size() << " bytes, buf[0] = 0xab)" << std::endl;
      wait_until_told_to_stop();
      shm.close();
      shm.unlink();
      std::cout << "unlinked: " << name << std::endl;
    } else {
      mpx::SharedMemory shm(name);
      std::printf("buf[0] = 0x%02x\n", static_cast<unsigned>(shm.buf()[0]));
      shm.close();
    }
  } catch (const mpx::Error& e) {
    std::cerr << "s07_named_shared_memory: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
