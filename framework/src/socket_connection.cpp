// A connection over a stream socket with Python's framing (see
// mpx/socket_connection.hpp for the contract).
//
// Reads go through poll(2) and MSG_DONTWAIT, so one loop serves the blocking
// and the timed calls, and never ask for more than the rest of the current
// message: a partial message lives in the state between calls (a timeout does
// not lose it), and the bytes after it stay in the socket.
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <string>

#include "mpx/detail/deadline.hpp"
#include "mpx/detail/unique_fd.hpp"
#include "mpx/socket_connection.hpp"
#include "mpx/sync_error.hpp"

namespace mpx {
namespace detail {

struct SocketConnectionState {
  UniqueFd fd;
  std::atomic<std::uint64_t> max_message_size{kDefaultMaxMessageSize};
  // Receive side: the header and body of the message being read.
  std::byte header[12]{};
  std::size_t header_have = 0;
  std::uint64_t body_size = 0;
  bool have_size = false;
  Bytes body;
  std::size_t body_have = 0;
  std::string refused;  // why a length was refused: the stream cannot be resynchronised
  // Send side.
  bool unwritable = false;  // a timed send left part of a message in the stream
};

std::size_t frame_header(std::uint64_t n, std::byte (&out)[12]) noexcept {
  auto put_be = [&](std::size_t at, std::uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) out[at + i] = std::byte(v >> (8 * (bytes - 1 - i)));
  };
  if (n > 0x7fffffff) {
    put_be(0, 0xffffffffu, 4);  // -1 as a big-endian int32
    put_be(4, n, 8);
    return 12;
  }
  put_be(0, n, 4);
  return 4;
}

namespace {

std::uint64_t get_be(const std::byte* p, int bytes) {
  std::uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v = (v << 8) | std::to_integer<std::uint64_t>(p[i]);
  return v;
}

enum class Wait { ready, timeout };

// Waits until `fd` has `events` (or an error/hang-up), or the deadline.
Wait wait_for(int fd, short events, const Deadline& deadline, const char* doing) {
  pollfd p{fd, events, 0};
  for (;;) {
    int r = ::poll(&p, 1, deadline.poll_timeout_ms());
    if (r > 0) return Wait::ready;
    if (r == 0) {
      if (deadline.expired()) return Wait::timeout;
      continue;  // rounded-up millisecond not over yet
    }
    if (errno != EINTR) throw OSError(errno, doing);
  }
}

enum class Read { message, eof, timeout, refused };

// Reads up to `n` bytes into `to`; returns the count, 0 at end of file, -1 when
// nothing is there yet.
ssize_t read_some(int fd, std::byte* to, std::size_t n) {
  for (;;) {
    ssize_t r = ::recv(fd, to, n, MSG_DONTWAIT);
    if (r >= 0) return r;
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) return -1;
    if (errno == ECONNRESET) return 0;  // the peer is gone: end of file
    throw OSError(errno, "mpx::SocketConnection: recv");
  }
}

// Checks the length of a whole header; on success the body is next.
Read take_header(SocketConnectionState& s, std::size_t header_size, std::uint64_t maxlength) {
  const std::uint64_t first = get_be(s.header, 4);
  const std::uint64_t size = header_size == 12 ? get_be(s.header + 4, 8) : first;
  const std::uint64_t max = std::min(maxlength, s.max_message_size.load(std::memory_order_relaxed));
  if (header_size == 4 && first > 0x7fffffff) {
    s.refused = "mpx::SocketConnection: malformed message length " +
                std::to_string(static_cast<std::int32_t>(static_cast<std::uint32_t>(first))) + " (negative)";
  } else if (size > max) {
    s.refused = "mpx::SocketConnection: a message of " + std::to_string(size) + " bytes is over the maximum of " +
                std::to_string(max) + " (max_message_size or the call's maxlength)";
  }
  if (!s.refused.empty()) {
    s.refused += "; the connection is no longer readable";
    return Read::refused;
  }
  s.body_size = size;
  s.have_size = true;
  s.body.clear();
  s.body_have = 0;
  return Read::message;
}

// Goes on reading the current message until it is whole, the peer closed, the
// length is refused, or the deadline. Never reads past the end of the message.
Read read_message(SocketConnectionState& s, const Deadline& deadline, std::uint64_t maxlength) {
  if (!s.refused.empty()) return Read::refused;
  const int fd = s.fd.get();
  for (;;) {
    std::byte* to;
    std::size_t want;
    if (!s.have_size) {
      // 4 bytes, or 12 when the first four are -1 (Python's marker of a long message).
      const std::size_t header_size = (s.header_have >= 4 && get_be(s.header, 4) == 0xffffffffu) ? 12 : 4;
      if (s.header_have == header_size) {
        if (take_header(s, header_size, maxlength) == Read::refused) return Read::refused;
        continue;
      }
      to = s.header + s.header_have;
      want = header_size - s.header_have;
    } else {
      if (s.body_have == s.body_size) return Read::message;
      // Grow the body as bytes arrive, so a large length costs memory only
      // once its bytes are really there.
      if (s.body_have == s.body.size())
        s.body.resize(static_cast<std::size_t>(std::min<std::uint64_t>(
            s.body_size, std::max<std::uint64_t>(2 * s.body.size(), 64 * 1024))));
      to = s.body.data() + s.body_have;
      want = s.body.size() - s.body_have;
    }
    ssize_t got = read_some(fd, to, want);
    if (got == 0) return Read::eof;
    if (got < 0) {
      if (wait_for(fd, POLLIN, deadline, "mpx::SocketConnection: poll for reading") == Wait::timeout)
        return Read::timeout;
      continue;
    }
    (s.have_size ? s.body_have : s.header_have) += static_cast<std::size_t>(got);
  }
}

// The whole message read so far; resets the state for the next one.
Bytes take_message(SocketConnectionState& s) {
  Bytes out = std::move(s.body);
  s.body = Bytes();
  s.header_have = 0;
  s.body_size = 0;
  s.body_have = 0;
  s.have_size = false;
  return out;
}

std::optional<Bytes> recv_until(SocketConnectionState& s, const Deadline& deadline,
                                std::uint64_t maxlength = UINT64_MAX) {
  switch (read_message(s, deadline, maxlength)) {
    case Read::message:
      return take_message(s);
    case Read::timeout:
      return std::nullopt;
    case Read::refused:
      throw MessageLengthError(s.refused);
    case Read::eof:
      break;
  }
  throw EOFError("the peer closed the socket connection");
}

void send_until(SocketConnectionState& s, std::span<const std::byte> message, const Deadline& deadline) {
  if (s.unwritable)
    throw ConnectionError("mpx::SocketConnection: not writable after a timed send left part of a message");
  std::byte header[12];
  const std::size_t header_size = frame_header(message.size(), header);
  iovec iov[2] = {{header, header_size}, {const_cast<std::byte*>(message.data()), message.size()}};
  const std::size_t total = header_size + message.size();
  std::size_t sent = 0;
  const int fd = s.fd.get();
  while (sent < total) {
    // The part of the two buffers not yet sent.
    iovec rest[2];
    int n = 0;
    if (sent < header_size) rest[n++] = {header + sent, header_size - sent};
    const std::size_t body_sent = sent > header_size ? sent - header_size : 0;
    if (message.size() > body_sent) rest[n++] = {static_cast<std::byte*>(iov[1].iov_base) + body_sent, message.size() - body_sent};
    msghdr msg{};
    msg.msg_iov = rest;
    msg.msg_iovlen = static_cast<decltype(msg.msg_iovlen)>(n);
    ssize_t r = ::sendmsg(fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (r >= 0) {
      sent += static_cast<std::size_t>(r);
      continue;
    }
    if (errno == EINTR) continue;
    if (errno == EPIPE || errno == ECONNRESET) throw BrokenPipeError();
    if (errno != EAGAIN && errno != EWOULDBLOCK) throw OSError(errno, "mpx::SocketConnection: send");
    if (wait_for(fd, POLLOUT, deadline, "mpx::SocketConnection: poll for writing") == Wait::timeout) {
      std::string what = "mpx::SocketConnection: send of " + std::to_string(message.size()) + " bytes timed out: ";
      if (sent == 0) throw SendTimeoutError(what + "the peer did not read in time (nothing was sent)");
      // Part of the message is in the stream: end it, so the peer sees a torn
      // message as end of file rather than reading garbage.
      s.unwritable = true;
      ::shutdown(fd, SHUT_WR);
      throw SendTimeoutError(what + std::to_string(sent) + " of " + std::to_string(total) +
                             " bytes were sent; the connection is shut down for writing");
    }
  }
}

}  // namespace
}  // namespace detail

using detail::Deadline;
using detail::SocketConnectionState;

BufferTooShort::BufferTooShort(Bytes message, std::size_t room)
    : ConnectionError("mpx::BufferTooShort: a message of " + std::to_string(message.size()) +
                      " bytes does not fit the " + std::to_string(room) + " bytes of the buffer"),
      message_(std::move(message)) {}

SocketConnection SocketConnection::adopt(int fd) {
  if (fd < 0) throw ConnectionError("mpx::SocketConnection::adopt: not a file descriptor");
  auto s = std::make_shared<SocketConnectionState>();
  s->fd.reset(fd);
  return SocketConnection(std::move(s));
}

SocketConnectionState& SocketConnection::state() const {
  if (!s_) throw ConnectionError("mpx::SocketConnection: not connected");
  if (!s_->fd) throw ConnectionError("mpx::SocketConnection: the connection is closed");
  return *s_;
}

void SocketConnection::send_bytes(std::span<const std::byte> message) {
  detail::send_until(state(), message, Deadline::never());
}

void SocketConnection::send_bytes(std::span<const std::byte> message, Timeout timeout) {
  detail::send_until(state(), message, Deadline::after(timeout));
}

void SocketConnection::send_bytes(std::span<const std::byte> buffer, std::size_t offset,
                                  std::optional<std::size_t> size) {
  if (offset > buffer.size())
    throw ConnectionError("mpx::SocketConnection::send_bytes: offset " + std::to_string(offset) +
                          " is past the end of the " + std::to_string(buffer.size()) + "-byte buffer");
  const std::size_t n = size.value_or(buffer.size() - offset);
  if (n > buffer.size() - offset)
    throw ConnectionError("mpx::SocketConnection::send_bytes: offset + size (" + std::to_string(offset) + " + " +
                          std::to_string(n) + ") is past the end of the " + std::to_string(buffer.size()) +
                          "-byte buffer");
  send_bytes(buffer.subspan(offset, n));
}

Bytes SocketConnection::recv_bytes() { return *detail::recv_until(state(), Deadline::never()); }

std::optional<Bytes> SocketConnection::recv_bytes(Timeout timeout) {
  return detail::recv_until(state(), Deadline::after(timeout));
}

Bytes SocketConnection::recv_bytes(std::uint64_t maxlength) {
  return *detail::recv_until(state(), Deadline::never(), maxlength);
}

std::optional<Bytes> SocketConnection::recv_bytes(std::uint64_t maxlength, Timeout timeout) {
  return detail::recv_until(state(), Deadline::after(timeout), maxlength);
}

namespace {
std::size_t copy_into(Bytes message, std::span<std::byte> buffer, std::size_t offset) {
  const std::size_t room = buffer.size() - offset;
  if (message.size() > room) throw BufferTooShort(std::move(message), room);
  if (!message.empty()) std::memcpy(buffer.data() + offset, message.data(), message.size());
  return message.size();
}
void check_offset(std::span<std::byte> buffer, std::size_t offset) {
  if (offset > buffer.size())
    throw ConnectionError("mpx::SocketConnection::recv_bytes_into: offset " + std::to_string(offset) +
                          " is past the end of the " + std::to_string(buffer.size()) + "-byte buffer");
}
}  // namespace

std::size_t SocketConnection::recv_bytes_into(std::span<std::byte> buffer, std::size_t offset) {
  check_offset(buffer, offset);
  return copy_into(recv_bytes(), buffer, offset);
}

std::optional<std::size_t> SocketConnection::recv_bytes_into(std::span<std::byte> buffer, std::size_t offset,
                                                             Timeout timeout) {
  check_offset(buffer, offset);
  auto message = recv_bytes(timeout);
  if (!message) return std::nullopt;
  return copy_into(std::move(*message), buffer, offset);
}

bool SocketConnection::poll(Timeout timeout) {
  // A refused length also answers true: recv then throws at once.
  return detail::read_message(state(), Deadline::after(timeout), UINT64_MAX) != detail::Read::timeout;
}

void SocketConnection::close() {
  if (s_) s_->fd.reset();
}

bool SocketConnection::closed() const { return !s_ || !s_->fd; }

int SocketConnection::fileno() const { return state().fd.get(); }

std::uint64_t SocketConnection::max_message_size() const {
  return state().max_message_size.load(std::memory_order_relaxed);
}

void SocketConnection::set_max_message_size(std::uint64_t max) {
  state().max_message_size.store(max, std::memory_order_relaxed);
}

}  // namespace mpx
