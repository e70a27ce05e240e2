// mpx::wait and the event-loop readiness of queues (see mpx/wait.hpp).
//
// A queue's descriptor is an eventfd made with the queue and inherited by
// every process forked afterwards. The ring's reader_armed word (detail/
// ring.hpp) decides who writes it: a reader arms it before it sleeps; the
// first put that finds it armed clears it and writes the eventfd, so puts
// pay a load and nothing more while nobody polls.
#include "mpx/wait.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

#include "mpx/detail/deadline.hpp"
#include "mpx/sync_error.hpp"

namespace mpx {
namespace detail {

QueueCore::QueueCore(Ring r, std::size_t max)
    : ring(std::move(r)), event_fd(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)), maxsize(max) {
  if (!event_fd) throw OSError(errno, "mpx queue: eventfd for the queue's readable descriptor");
}

QueueCore::QueueCore(Ring r, std::size_t max, UniqueFd event)
    : ring(std::move(r)), event_fd(std::move(event)), maxsize(max) {}

void queue_signal_reader(QueueCore& core) noexcept {
  const std::uint64_t one = 1;
  // Only fails with EAGAIN at a count of 2^64-2: readable anyway.
  (void)!::write(core.event_fd.get(), &one, sizeof one);
}

namespace {

// Drains the eventfd, arms the ring; true (and the eventfd signalled) when
// items arrived meanwhile. Nothing to do while still armed: then no put has
// signalled since the last arming, so the eventfd is quiet.
bool queue_arm(QueueCore& core) noexcept {
  if (core.ring.reader_armed()) return false;
  std::uint64_t count = 0;
  (void)!::read(core.event_fd.get(), &count, sizeof count);
  if (!core.ring.arm_reader()) return false;
  queue_signal_reader(core);
  return true;
}

}  // namespace

void queue_rearm_reader(QueueCore& core) noexcept { (void)queue_arm(core); }

}  // namespace detail

Waitable::Waitable(const Connection& connection)
    : kind_(Kind::connection), fd_(connection.fileno()), connection_(connection) {
  if (fd_ < 0) throw ConnectionError("mpx::wait: the connection is closed");
}

Waitable::Waitable(std::shared_ptr<detail::QueueCore> queue, int fd)
    : kind_(Kind::queue), fd_(fd), queue_(std::move(queue)) {}

Waitable::Waitable(const Process& process) : Waitable(process.sentinel()) {}
Waitable::Waitable(const ProcessHandle& process) : Waitable(process.sentinel()) {}

Waitable Waitable::descriptor(int fd) { return Waitable(fd); }

namespace {

bool fd_readable(int fd) {
  pollfd p{fd, POLLIN, 0};
  for (;;) {
    int r = ::poll(&p, 1, 0);
    if (r >= 0) return r > 0;
    if (errno != EINTR) throw OSError(errno, "mpx::wait: poll");
  }
}

}  // namespace

bool Waitable::ready() const {
  switch (kind_) {
    case Kind::descriptor: return fd_readable(fd_);
    case Kind::connection: return detail::connection_ready(connection_, false);
    case Kind::queue:
      if (queue_->closed.load(std::memory_order_acquire)) throw QueueClosed();
      return queue_->ring.size() > 0;
  }
  return false;
}

bool Waitable::ready_or_arm() const {
  switch (kind_) {
    case Kind::descriptor: return fd_readable(fd_);
    case Kind::connection: return detail::connection_ready(connection_, true);
    case Kind::queue:
      if (queue_->closed.load(std::memory_order_acquire)) throw QueueClosed();
      return queue_->ring.size() > 0 || detail::queue_arm(*queue_);
  }
  return false;
}

std::vector<std::size_t> wait(std::span<const Waitable> objects, std::optional<std::chrono::duration<double>> timeout) {
  const detail::Deadline deadline = timeout ? detail::Deadline::after(*timeout) : detail::Deadline::never();
  std::vector<pollfd> fds(objects.size());
  std::vector<std::size_t> ready;
  for (;;) {
    for (std::size_t i = 0; i < objects.size(); ++i) {
      if (objects[i].ready_or_arm()) ready.push_back(i);
      fds[i] = pollfd{objects[i].fd(), POLLIN, 0};
    }
    if (!ready.empty()) return ready;
    int ms = -1;
    if (auto left = deadline.remaining()) {
      // Round up: a wait that wakes a hair early would only loop once more.
      ms = static_cast<int>(std::chrono::ceil<std::chrono::milliseconds>(*left).count());
      if (ms < 0) ms = 0;
    }
    const int r = ::poll(fds.data(), fds.size(), ms);
    if (r < 0 && errno != EINTR) throw OSError(errno, "mpx::wait: poll");
    if (r > 0) {
      // A readable descriptor means "may be ready": confirm (another
      // consumer may have taken the item first).
      for (std::size_t i = 0; i < objects.size(); ++i)
        if (fds[i].revents != 0 && objects[i].ready()) ready.push_back(i);
      if (!ready.empty()) return ready;
    }
    if (deadline.expired()) return ready;
  }
}

}  // namespace mpx
