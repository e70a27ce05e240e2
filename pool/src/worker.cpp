// pool/src/worker.cpp: the loop a pool worker runs. It connects to its
// pool's socket, runs the initializer, then runs tasks in the order they
// come and sends each result back, batching results while more tasks wait.
// It exits when the pool closes its end, after `max_tasks` tasks, or with its
// parent (PR_SET_PDEATHSIG, set by Process).
#include "worker.hpp"

#include <sys/socket.h>
#include <sys/un.h>

#include <cerrno>
#include <chrono>
#include <cstring>

#include "mpx/detail/unique_fd.hpp"
#include "mpx/forkserver.hpp"
#include "mpx/pool_error.hpp"
#include "wire.hpp"

namespace mpx::detail::pool {

namespace {

// Results wait at most this long for company before they are sent; the
// result of a task that took send_now_after or more goes at once (one send
// per such task costs little, and the pool needs it to hand out the next).
constexpr auto flush_interval = std::chrono::microseconds(500);
constexpr auto send_now_after = std::chrono::microseconds(50);
constexpr std::size_t flush_bytes = 256 * 1024;

void send_all(int fd, Bytes& out) {
  std::size_t sent = 0;
  while (sent < out.size()) {
    const ssize_t n = ::send(fd, out.data() + sent, out.size() - sent, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      // The pool is gone: nobody wants the results.
      throw PoolError(std::string("mpx::Pool worker: send to the pool failed: ") + std::strerror(errno));
    }
    sent += static_cast<std::size_t>(n);
  }
  out.clear();
}

// Reads what the socket has into `in`; false at end of stream. With
// `wait` false, returns true with nothing read when no data is there.
bool receive(int fd, FrameBuffer& in, bool wait) {
  for (;;) {
    auto room = in.reserve(std::max<std::size_t>(64 * 1024, in.wanted()));
    const ssize_t n = ::recv(fd, room.data(), room.size(), wait ? 0 : MSG_DONTWAIT);
    if (n > 0) {
      in.commit(static_cast<std::size_t>(n));
      return true;
    }
    if (n == 0) return false;
    if (errno == EINTR) continue;
    if (!wait && (errno == EAGAIN || errno == EWOULDBLOCK)) return true;
    throw PoolError(std::string("mpx::Pool worker: receive from the pool failed: ") + std::strerror(errno));
  }
}

UniqueFd connect_to(const std::string& name) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) throw PoolError(std::string("mpx::Pool worker: socket: ") + std::strerror(errno));
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  // An abstract name: a leading NUL, no file on disk.
  std::memcpy(address.sun_path + 1, name.data(), name.size());
  const auto length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
  if (::connect(fd.get(), reinterpret_cast<const sockaddr*>(&address), length) != 0)
    throw PoolError("mpx::Pool worker: cannot reach the pool at @" + name + ": " + std::strerror(errno));
  return fd;
}

}  // namespace

void mpx_pool_worker_main(WorkerConfig config) {
  const UniqueFd socket = connect_to(config.socket_name);
  Bytes out;
  if (config.initializer_invoker) {
    try {
      Bytes unused;
      reinterpret_cast<TaskInvoker>(config.initializer_invoker)(config.initializer_target, config.initializer_arguments,
                                                                 unused);
    } catch (...) {
      append_frame(out, FrameKind::init_failed, {}, encode(describe_current_exception()));
      send_all(socket.get(), out);
      throw;  // exit code 1, the error logged by the child's bootstrap
    }
  }
  append_frame(out, FrameKind::ready, {}, {});
  send_all(socket.get(), out);

  FrameBuffer in;
  Bytes result;
  std::uint64_t done = 0;
  // When the oldest result not yet sent was made (meaningless while `out` is empty).
  auto first_unsent = std::chrono::steady_clock::now();
  for (;;) {
    // Run every complete task we have; send when nothing more is waiting,
    // or when results have waited long enough.
    while (auto frame = in.next()) {
      if (frame->kind != FrameKind::task || frame->body.size() < 24)
        throw PoolError("mpx::Pool worker: unexpected frame from the pool");
      const std::uint64_t id = get_u64(frame->body, 0);
      const auto invoker = reinterpret_cast<TaskInvoker>(get_u64(frame->body, 8));
      const std::uint64_t target = get_u64(frame->body, 16);
      const auto started = std::chrono::steady_clock::now();
      if (out.empty()) first_unsent = started;
      try {
        invoker(target, frame->body.subspan(24), result);
        append_frame(out, FrameKind::result, {id}, result);
      } catch (...) {
        append_frame(out, FrameKind::error, {id}, encode(describe_current_exception()));
      }
      ++done;
      if (config.max_tasks && done >= config.max_tasks) {
        send_all(socket.get(), out);
        return;  // retired; the pool starts a fresh worker
      }
      if (!in.has_complete_frame() && !receive(socket.get(), in, false)) break;
      const auto now = std::chrono::steady_clock::now();
      if (!in.has_complete_frame() || out.size() >= flush_bytes || now - first_unsent >= flush_interval ||
          now - started >= send_now_after) {
        send_all(socket.get(), out);
      }
    }
    if (!out.empty()) send_all(socket.get(), out);
    if (!receive(socket.get(), in, true)) return;  // the pool closed: done
  }
}

MPX_REGISTER_FUNCTION(mpx_pool_worker_main);

}  // namespace mpx::detail::pool
