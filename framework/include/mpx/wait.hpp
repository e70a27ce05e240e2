// mpx/wait.hpp: mpx::wait, as multiprocessing.connection.wait, and the
// readiness of mpx objects for any event loop (epoll, poll, Asio, libuv...).
//
//     auto ready = mpx::wait({conn, queue, process}, 1s);   // indices of the ready ones
//     for (std::size_t i : ready) ...
//
// Contract
// - Each Waitable has a descriptor (fd()) that polls readable when the
//   object may be ready, so it can be handed to an event loop:
//     Connection      fileno(): a message is waiting, or end of file
//     Queue<T>        readable_fd(): an item may be waiting (an eventfd)
//     Process         sentinel(): the child ended (its pidfd)
//     descriptor(fd)  any descriptor: readable
//   A connection's and a queue's descriptor is armed by the reader: it turns
//   readable after the first message put once armed, and stays readable until
//   the reader re-arms it. A recv/get that finds nothing (Connection::poll()
//   returning false, recv(timeout) or get_nowait() coming back empty) re-arms
//   it, and so does wait(). So an event loop reads until that happens, then
//   waits on the descriptor again.
// - wait(objects, timeout) blocks until at least one object is ready or the
//   timeout passes (none: forever; zero or negative: look once) and returns
//   the indices of the ready objects, in order; empty on timeout. Ready means
//   what Python's wait means: a connection has a message or is at end of
//   file, a queue had an item when wait looked (another consumer may take it
//   first), a process ended. The objects must outlive the call. Throws
//   mpx::OSError if poll fails, ConnectionError for a closed connection,
//   QueueClosed for a queue closed in this process.
#pragma once

#include <chrono>
#include <cstddef>
#include <initializer_list>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "mpx/connection.hpp"
#include "mpx/process.hpp"
#include "mpx/queue.hpp"

namespace mpx {

class Waitable {
 public:
  Waitable(const Connection& connection);  // NOLINT: implicit, as Python's wait takes any of them
  template <class T>
  Waitable(const Queue<T>& queue) : Waitable(queue.core_, queue.readable_fd()) {}  // NOLINT
  Waitable(const Process& process);          // NOLINT
  Waitable(const ProcessHandle& process);    // NOLINT
  // Any descriptor, ready when it polls readable (or hung up).
  [[nodiscard]] static Waitable descriptor(int fd);

  // The descriptor to hand to an event loop (borrowed: owned by the object).
  [[nodiscard]] int fd() const { return fd_; }
  // True when the object is ready now; otherwise arms fd() so that it turns
  // readable when the object may become ready, and returns false.
  [[nodiscard]] bool ready_or_arm() const;
  // True when the object is ready now (does not arm).
  [[nodiscard]] bool ready() const;

 private:
  enum class Kind { descriptor, connection, queue };
  Waitable(std::shared_ptr<detail::QueueCore> queue, int fd);
  explicit Waitable(int fd) : kind_(Kind::descriptor), fd_(fd) {}

  Kind kind_;
  int fd_ = -1;
  Connection connection_;
  std::shared_ptr<detail::QueueCore> queue_;
};

// Indices of the ready objects (see the contract); empty after the timeout.
[[nodiscard]] std::vector<std::size_t> wait(std::span<const Waitable> objects,
                                            std::optional<std::chrono::duration<double>> timeout = std::nullopt);
[[nodiscard]] inline std::vector<std::size_t> wait(std::initializer_list<Waitable> objects,
                                                   std::optional<std::chrono::duration<double>> timeout = std::nullopt) {
  return wait(std::span<const Waitable>(objects.begin(), objects.size()), timeout);
}

}  // namespace mpx
