// Pipe ends on AF_UNIX SOCK_SEQPACKET sockets (see mpx/connection.hpp).
//
// Why SEQPACKET: each send is one record and each recv returns one whole
// record, so a message that fits a record is atomic with respect to other
// senders and receivers on the same end (seed 03: two children send on one
// end, the parent receives one whole message). A stream socket or a pipe only
// guarantees that for writes up to PIPE_BUF and would need two reads per
// message (header, then payload) under a lock.
//
// Wire format: every record starts with a 16-byte header
//   u32 magic "MPXC" | u32 flags (kFirst, kLast) | u64 total message length
// followed by up to Connection::kAtomicBytes of the message. A longer message
// is a kFirst record, continuation records, and a kLast one. Every send holds
// the end's send lock (so no record of another sender lands inside a long
// message); the receiver holds the end's receive lock for the whole
// message. Both locks live in one shared page per Pipe and carry the holder's
// pid, so a holder that died is detected and the lock taken over; a receiver
// drops continuation records that arrive without their first record, and
// restarts when a new first record interrupts a message (its sender died).
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <new>
#include <system_error>

#include "mpx/connection.hpp"
#include "mpx/detail/deadline.hpp"
#include "mpx/detail/futex.hpp"
#include "mpx/detail/ring.hpp"
#include "mpx/detail/shared_mapping.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MPX_CONN_RELAX() _mm_pause()
#else
#define MPX_CONN_RELAX() std::atomic_signal_fence(std::memory_order_seq_cst)
#endif

namespace mpx {
namespace detail {

namespace {

constexpr std::uint32_t kMagic = 0x4358504Du;  // "MPXC"
constexpr std::uint32_t kFirst = 1;
constexpr std::uint32_t kLast = 2;
constexpr std::uint32_t kWaitersBit = 0x80000000u;
constexpr auto kTick = std::chrono::milliseconds(20);
// A receiver polls without sleeping this long before it blocks in the kernel:
// a sleeping receiver costs the sender a cross-core wake-up (~10 us here).
constexpr auto kRecvSpin = std::chrono::microseconds(30);

struct RecordHeader {
  std::uint32_t magic;
  std::uint32_t flags;
  std::uint64_t total;
};
static_assert(sizeof(RecordHeader) == 16);

struct PipeShared {
  std::atomic<std::uint32_t> recv_lock[2];
  std::atomic<std::uint32_t> send_lock[2];
};

// A lock word holding the owner's pid (| kWaitersBit while someone sleeps).
bool pid_lock(std::atomic<std::uint32_t>& word, const Deadline& deadline) {
  const auto me = static_cast<std::uint32_t>(current_pid());
  int spins = 0;
  auto watched_since = Deadline::Clock::now();
  std::uint32_t watched = 0;
  for (;;) {
    std::uint32_t cur = 0;
    if (word.compare_exchange_strong(cur, me, std::memory_order_acquire)) return true;
    if (deadline.expired()) return false;
    if (++spins < 100) {
      MPX_CONN_RELAX();
      continue;
    }
    if (spins < 120) {
      ::sched_yield();
      continue;
    }
    const std::uint32_t owner = cur & ~kWaitersBit;
    if (cur != watched) {
      watched = cur;
      watched_since = Deadline::Clock::now();
    } else if (Deadline::Clock::now() - watched_since >= kTick && !process_alive(static_cast<pid_t>(owner))) {
      // The holder died mid-message: take the lock over.
      if (word.compare_exchange_strong(cur, me, std::memory_order_acquire)) return true;
      continue;
    }
    if (!(cur & kWaitersBit) && !word.compare_exchange_strong(cur, cur | kWaitersBit)) continue;
    auto tick = Deadline::after(kTick);
    auto left = deadline.remaining();
    futex_wait(word, cur | kWaitersBit, (left && *left < kTick) ? deadline : tick);
  }
}

void pid_unlock(std::atomic<std::uint32_t>& word) {
  if (word.exchange(0, std::memory_order_release) & kWaitersBit) futex_wake_all(word);
}

class LockGuard {
 public:
  explicit LockGuard(std::atomic<std::uint32_t>& w) : w_(w) {}
  LockGuard(const LockGuard&) = delete;
  LockGuard& operator=(const LockGuard&) = delete;
  ~LockGuard() { pid_unlock(w_); }

 private:
  std::atomic<std::uint32_t>& w_;
};

[[noreturn]] void throw_errno(const char* what) { throw std::system_error(errno, std::generic_category(), what); }

}  // namespace

struct ConnectionState {
  std::atomic<int> fd{-1};
  int end = 0;
  bool readable = false;
  bool writable = false;
  std::shared_ptr<SharedMapping> page;
  PipeShared* shared = nullptr;
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
  if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, fds) != 0) detail::throw_errno("socketpair");
  auto page = std::make_shared<detail::SharedMapping>(detail::SharedMapping::anonymous(4096));
  auto* shared = new (page->data()) detail::PipeShared{};
  auto a = std::make_shared<ConnectionState>();
  auto b = std::make_shared<ConnectionState>();
  a->fd = fds[0];
  b->fd = fds[1];
  a->end = 0;
  b->end = 1;
  a->page = b->page = page;
  a->shared = b->shared = shared;
  if (duplex) {
    a->readable = a->writable = b->readable = b->writable = true;
  } else {
    // Python's order: (receive-only end, send-only end).
    a->readable = true;
    b->writable = true;
    ::shutdown(fds[0], SHUT_WR);
    ::shutdown(fds[1], SHUT_RD);
  }
  return {Connection(a), Connection(b)};
}

ConnectionState& Connection::state(bool for_send) const {
  if (!s_) throw ConnectionError("mpx::Connection: not connected");
  if (s_->fd.load(std::memory_order_acquire) < 0) throw ConnectionError("mpx::Connection: the connection is closed");
  if (for_send && !s_->writable)
    throw ConnectionError("mpx::Connection: this end is receive-only (Pipe(duplex=false)); it cannot send");
  if (!for_send && !s_->readable)
    throw ConnectionError("mpx::Connection: this end is send-only (Pipe(duplex=false)); it cannot recv");
  return *s_;
}

void Connection::send_bytes(std::span<const std::byte> message) {
  ConnectionState& st = state(true);
  const int fd = st.fd.load(std::memory_order_acquire);
  auto send_record = [&](std::uint32_t flags, std::span<const std::byte> part) {
    detail::RecordHeader h{detail::kMagic, flags, message.size()};
    iovec iov[2] = {{&h, sizeof h}, {const_cast<std::byte*>(part.data()), part.size()}};
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = part.empty() ? 1 : 2;
    for (;;) {
      ssize_t n = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
      if (n >= 0) return;
      if (errno == EINTR) continue;
      if (errno == EPIPE || errno == ECONNRESET) throw BrokenPipeError();
      detail::throw_errno("mpx::Connection send");
    }
  };
  // Every send holds the end's send lock (one uncontended CAS pair): a small
  // message from another sender must not land between the records of a
  // large one.
  auto& lock = st.shared->send_lock[st.end];
  (void)detail::pid_lock(lock, Deadline::never());
  detail::LockGuard guard(lock);
  if (message.size() <= kAtomicBytes) {
    send_record(detail::kFirst | detail::kLast, message);
    return;
  }
  std::size_t off = 0;
  while (off < message.size()) {
    std::size_t part = std::min(kAtomicBytes, message.size() - off);
    std::uint32_t flags = (off == 0 ? detail::kFirst : 0) | (off + part == message.size() ? detail::kLast : 0);
    send_record(flags, message.subspan(off, part));
    off += part;
  }
}

bool Connection::recv_into(Bytes& out, const Timeout* timeout) {
  ConnectionState& st = state(false);
  const int fd = st.fd.load(std::memory_order_acquire);
  Deadline deadline = timeout ? Deadline::after(*timeout) : Deadline::never();
  auto& lock = st.shared->recv_lock[st.end];
  if (!detail::pid_lock(lock, deadline)) return false;
  detail::LockGuard guard(lock);

  thread_local std::unique_ptr<std::byte[]> record(new std::byte[kAtomicBytes]);
  bool have_first = false;
  std::uint64_t total = 0, got = 0;
  const auto spin_until = Deadline::Clock::now() + detail::kRecvSpin;
  for (;;) {
    detail::RecordHeader h{};
    iovec iov[2];
    iov[0] = {&h, sizeof h};
    if (have_first)
      iov[1] = {out.data() + got, static_cast<std::size_t>(std::min<std::uint64_t>(total - got, kAtomicBytes))};
    else
      iov[1] = {record.get(), kAtomicBytes};
    msghdr msg{};
    msg.msg_iov = iov;
    msg.msg_iovlen = 2;
    ssize_t n = ::recvmsg(fd, &msg, MSG_DONTWAIT);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) {
        if (errno == ECONNRESET) throw EOFError();
        detail::throw_errno("mpx::Connection recv");
      }
      if (Deadline::Clock::now() < spin_until) {
        // Yield rather than burn: when the peer shares our core it runs now.
        ::sched_yield();
        continue;
      }
      if (deadline.is_never() || have_first) {
        // Nothing yet: block in the kernel (a message's records follow each other).
        n = ::recvmsg(fd, &msg, 0);
        if (n < 0) {
          if (errno == EINTR) continue;
          if (errno == ECONNRESET) throw EOFError();
          detail::throw_errno("mpx::Connection recv");
        }
      } else {
        pollfd p{fd, POLLIN, 0};
        int r = ::poll(&p, 1, deadline.poll_timeout_ms());
        if (r < 0 && errno != EINTR) detail::throw_errno("mpx::Connection poll");
        if (r == 0 && deadline.expired()) return false;
        continue;
      }
    }
    if (n == 0) throw EOFError();
    if (static_cast<std::size_t>(n) < sizeof h || h.magic != detail::kMagic || (msg.msg_flags & MSG_TRUNC))
      throw ConnectionError("mpx::Connection: a record that is not an mpx message arrived (framing broken)");
    const std::size_t part = static_cast<std::size_t>(n) - sizeof h;
    if (h.flags & detail::kFirst) {
      if (h.total > default_max_message_size() && h.total > kAtomicBytes)
        throw ConnectionError("mpx::Connection: message of " + std::to_string(h.total) +
                              " bytes exceeds the maximum message size");
      // A first record, also when it interrupts a message whose sender died
      // (then it landed inside `out`, behind the partial message).
      if (part > h.total) throw ConnectionError("mpx::Connection: record longer than its message");
      if (have_first) std::memcpy(record.get(), out.data() + got, part);
      have_first = true;
      total = h.total;
      out.resize(static_cast<std::size_t>(total));
      if (part) std::memcpy(out.data(), record.get(), part);
      got = part;
    } else if (!have_first) {
      continue;  // the rest of a message whose receiver died: skip it
    } else {
      got += part;
    }
    if (got >= total) return true;
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
  pollfd p{st.fd.load(std::memory_order_acquire), POLLIN, 0};
  Deadline deadline = Deadline::after(timeout);
  for (;;) {
    int r = ::poll(&p, 1, deadline.poll_timeout_ms());
    if (r > 0) return true;
    if (r == 0) return false;
    if (errno != EINTR) detail::throw_errno("mpx::Connection poll");
  }
}

void Connection::close() {
  if (!s_) return;
  int f = s_->fd.exchange(-1);
  if (f >= 0) ::close(f);
}

bool Connection::closed() const { return !s_ || s_->fd.load(std::memory_order_acquire) < 0; }
bool Connection::readable() const { return s_ && s_->readable; }
bool Connection::writable() const { return s_ && s_->writable; }
int Connection::fileno() const { return s_ ? s_->fd.load(std::memory_order_acquire) : -1; }

}  // namespace mpx
