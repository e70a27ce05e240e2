// Pipe ends: messages through shared-memory rings, peer liveness through a
// socketpair (see mpx/connection.hpp for the contract).
//
// Why not send the bytes through the socket: a round trip through the kernel
// costs two syscalls and, when the receiver sleeps, a cross-core wake-up
// (~10 us here); the ring's fast path has neither and a receiver that spins
// briefly answers a ping in about a microsecond. Atomicity of messages with
// several senders (seed 03), any message size and recovery from a process
// killed mid-message come with the ring (docs/queues-and-pipes.md).
//
// What the socket is for: the kernel knows when every copy of an end is
// closed, in every process, including processes that died. Our end of the
// socketpair then reports POLLHUP. That is Python's EOF rule, and no counter
// in shared memory could follow processes that die. The receiver checks it
// when the ring is empty: first after 1 ms of waiting, then every 20 ms.
//
// Event loops: the socket also carries one-byte wake-up packets. A receiver
// that found nothing arms the ring (Ring::arm_reader) after draining its
// socket; the first send after that writes one packet into the sender's end,
// so the receiver's fileno() polls readable. Nobody armed: no write.
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <string>

#include "mpx/connection.hpp"
#include "mpx/detail/deadline.hpp"
#include "mpx/detail/fd_passing.hpp"
#include "mpx/detail/ring.hpp"
#include "mpx/sync_error.hpp"

namespace mpx {
namespace detail {

namespace {

constexpr auto kFirstSlice = std::chrono::milliseconds(1);
constexpr auto kSlice = std::chrono::milliseconds(20);
constexpr auto kSendCheckEvery = std::chrono::milliseconds(1);

RingOptions pipe_ring_options() {
  RingOptions o;
  o.capacity = 4096;
  o.tiny_lanes = 1024;  // 49..256-byte messages: a 256-byte lane each, as queues
  o.mid_lanes = 256;
  o.small_lanes = 256;
  o.lanes = 16;
  o.lane_bytes = 256 * 1024;
  return o;
}

// The earlier of `deadline` and now + `slice`.
Deadline sliced(const Deadline& deadline, std::chrono::milliseconds slice) {
  auto left = deadline.remaining();
  return (left && *left < slice) ? deadline : Deadline::after(slice);
}

[[noreturn]] void throw_errno(const char* what) { throw OSError(errno, what); }

// Reads the wake-up packets waiting on our end (stops at end of file).
void drain_wakeups(int fd) {
  char buf[64];
  while (::recv(fd, buf, sizeof buf, MSG_DONTWAIT) > 0) {
  }
}

// Makes the peer's end readable (a full socket is readable already; a
// closed peer does not care).
void wake_peer(int fd) {
  const char b = 0;
  (void)::send(fd, &b, 1, MSG_DONTWAIT | MSG_NOSIGNAL);
}

// Arms a receiver's fileno(); true when a message arrived meanwhile (then
// the descriptor is signalled too).
bool arm(Ring& ring, int fd) {
  if (ring.reader_armed()) return false;  // no send signalled since the last arming
  drain_wakeups(fd);
  return ring.arm_reader();
}

// True when every copy of the peer's end of the socketpair is closed.
bool peer_closed(int fd) {
  pollfd p{fd, POLLIN, 0};
  for (;;) {
    int r = ::poll(&p, 1, 0);
    if (r >= 0) return r > 0 && (p.revents & (POLLHUP | POLLERR)) != 0;
    if (errno != EINTR) throw_errno("mpx::Connection: poll of the peer-liveness socket");
  }
}

}  // namespace

struct PipeCore {
  Ring rings[2];  // rings[e]: messages sent from end e
};

struct ConnectionState {
  std::atomic<int> fd{-1};
  int end = 0;
  bool readable = false;
  bool writable = false;
  std::shared_ptr<PipeCore> core;
  std::atomic<Deadline::Clock::rep> last_peer_check{0};
  ~ConnectionState() {
    int f = fd.exchange(-1);
    if (f >= 0) ::close(f);
  }
};

}  // namespace detail

using detail::ConnectionState;
using detail::Deadline;

std::pair<Connection, Connection> make_pipe(bool duplex) {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) != 0)
    detail::throw_errno("mpx::Pipe: socketpair for the end-of-file tracking");
  auto core = std::make_shared<detail::PipeCore>();
  core->rings[0] = detail::Ring::create(detail::pipe_ring_options());
  if (duplex) core->rings[1] = detail::Ring::create(detail::pipe_ring_options());
  auto a = std::make_shared<ConnectionState>();
  auto b = std::make_shared<ConnectionState>();
  a->fd = fds[0];
  b->fd = fds[1];
  a->core = b->core = core;
  if (duplex) {
    a->end = 0;
    b->end = 1;
    a->readable = a->writable = b->readable = b->writable = true;
  } else {
    // Python's order: (receive-only end, send-only end); one ring, written by b.
    a->end = 1;
    b->end = 0;
    a->readable = true;
    b->writable = true;
  }
  return {Connection(a), Connection(b)};
}

namespace detail {

PassedConnection send_connection(const Connection& c) {
  if (!c.s_) throw ConnectionError("mpx::Connection: not connected");
  const int fd = c.s_->fd.load(std::memory_order_acquire);
  if (fd < 0) throw ConnectionError("mpx::Connection: the connection is closed");
  PassedConnection passed;
  passed.socket = send_fd(fd, "a Pipe end");
  for (int r = 0; r < 2 && c.s_->core->rings[r]; ++r) {
    passed.rings[r] = send_fd(c.s_->core->rings[r].base_fd(), "a Pipe end");
    passed.ring_count = static_cast<std::uint8_t>(r + 1);
  }
  passed.end = static_cast<std::uint8_t>(c.s_->end);
  passed.readable = c.s_->readable;
  passed.writable = c.s_->writable;
  return passed;
}

Connection receive_connection(const PassedConnection& passed) {
  if (passed.ring_count < 1 || passed.ring_count > 2 || passed.end > 1)
    throw ConnectionError("mpx::Connection: a received pipe end is malformed");
  auto core = std::make_shared<PipeCore>();
  for (int r = 0; r < passed.ring_count; ++r) {
    UniqueFd file = receive_fd(passed.rings[r], "a Pipe end");
    core->rings[r] = Ring::attach(pipe_ring_options(), file.get(), UniqueFd());
  }
  auto state = std::make_shared<ConnectionState>();
  state->fd = receive_fd(passed.socket, "a Pipe end").release();
  state->end = passed.end;
  state->readable = passed.readable;
  state->writable = passed.writable;
  state->core = std::move(core);
  return Connection(std::move(state));
}

}  // namespace detail

ConnectionState& Connection::state(bool for_send) const {
  if (!s_) throw ConnectionError("mpx::Connection: not connected");
  if (s_->fd.load(std::memory_order_acquire) < 0) throw ConnectionError("mpx::Connection: the connection is closed");
  if (for_send && !s_->writable)
    throw ConnectionError("mpx::Connection: this end is receive-only (Pipe(duplex=false)); it cannot send");
  if (!for_send && !s_->readable)
    throw ConnectionError("mpx::Connection: this end is send-only (Pipe(duplex=false)); it cannot recv");
  return *s_;
}

void Connection::send_bytes(std::span<const std::byte> message) { send_until(message, nullptr); }

void Connection::send_bytes(std::span<const std::byte> message, Timeout timeout) { send_until(message, &timeout); }

void Connection::send_until(std::span<const std::byte> message, const Timeout* timeout) {
  ConnectionState& st = state(true);
  const int fd = st.fd.load(std::memory_order_acquire);
  // Sending to a peer closed everywhere fails as Python's does; the check is
  // a syscall, so it runs at most once per millisecond while sends succeed.
  const auto now = Deadline::Clock::now().time_since_epoch().count();
  const auto every = std::chrono::duration_cast<Deadline::Clock::duration>(detail::kSendCheckEvery).count();
  if (now - st.last_peer_check.load(std::memory_order_relaxed) >= every) {
    st.last_peer_check.store(now, std::memory_order_relaxed);
    if (detail::peer_closed(fd)) throw BrokenPipeError();
  }
  detail::Ring& ring = st.core->rings[st.end];
  const Deadline deadline = timeout ? Deadline::after(*timeout) : Deadline::never();
  // While the ring is full, the put asks about every 20 ms whether anyone is
  // still there to read.
  auto gone = [fd] { return detail::peer_closed(fd); };
  const detail::StopCheck stop(gone);
  if (ring.put(message, deadline, true, &stop)) {
    if (ring.reader_signal_due()) detail::wake_peer(fd);
    return;
  }
  if (detail::peer_closed(fd)) throw BrokenPipeError();
  throw SendTimeoutError("mpx::Connection: send of " + std::to_string(message.size()) +
                         " bytes timed out: the receiver did not make room in time (nothing was delivered)");
}

bool Connection::recv_into(Bytes& out, const Timeout* timeout) {
  ConnectionState& st = state(false);
  const int fd = st.fd.load(std::memory_order_acquire);
  detail::Ring& ring = st.core->rings[1 - st.end];
  auto sink = [&](std::span<const std::byte> bytes) { out.assign(bytes.begin(), bytes.end()); };
  if (ring.get(detail::ByteSink(sink), Deadline::never(), false)) return true;
  const Deadline deadline = timeout ? Deadline::after(*timeout) : Deadline::never();
  auto slice = detail::kFirstSlice;
  for (;;) {
    if (ring.get(detail::ByteSink(sink), detail::sliced(deadline, slice), true)) return true;
    if (detail::peer_closed(fd)) {
      // A message sent just before the peer closed is still delivered.
      if (ring.get(detail::ByteSink(sink), Deadline::never(), false)) return true;
      throw EOFError();
    }
    if (deadline.expired()) {
      (void)detail::arm(ring, fd);  // found nothing: arm fileno() for the next message
      return false;
    }
    slice = detail::kSlice;
  }
}

Bytes Connection::recv_bytes() {
  Bytes out;
  recv_into(out, nullptr);
  return out;
}

std::optional<Bytes> Connection::recv_bytes(Timeout timeout) {
  Bytes out;
  if (!recv_into(out, &timeout)) return std::nullopt;
  return out;
}

bool Connection::poll(Timeout timeout) {
  ConnectionState& st = state(false);
  const int fd = st.fd.load(std::memory_order_acquire);
  detail::Ring& ring = st.core->rings[1 - st.end];
  const Deadline deadline = Deadline::after(timeout);
  auto slice = detail::kFirstSlice;
  for (;;) {
    if (ring.size() > 0 || detail::peer_closed(fd)) return true;
    if (deadline.expired()) return detail::arm(ring, fd);  // arms fileno(); true if a message came meanwhile
    if (ring.wait_nonempty(detail::sliced(deadline, slice))) return true;
    slice = detail::kSlice;
  }
}

void Connection::close() {
  if (!s_) return;
  int f = s_->fd.exchange(-1);
  if (f >= 0) ::close(f);
}

bool detail::connection_ready(const Connection& c, bool arm) {
  ConnectionState& st = c.state(false);
  const int fd = st.fd.load(std::memory_order_acquire);
  Ring& ring = st.core->rings[1 - st.end];
  if (ring.size() > 0 || peer_closed(fd)) return true;
  return arm && detail::arm(ring, fd);
}

bool Connection::closed() const { return !s_ || s_->fd.load(std::memory_order_acquire) < 0; }
bool Connection::readable() const { return s_ && s_->readable; }
bool Connection::writable() const { return s_ && s_->writable; }
int Connection::fileno() const { return s_ ? s_->fd.load(std::memory_order_acquire) : -1; }

}  // namespace mpx
