// mpx/socket_connection.hpp: a connection over a stream socket, as the
// Connection that Python's multiprocessing.connection.Listener.accept() and
// Client() return (mpx/listener.hpp makes them).
//
//     mpx::SocketConnection c = mpx::Client(mpx::Address::tcp("127.0.0.1", port), "key");
//     c.send_bytes("hello");                 // raw bytes, Python's framing
//     mpx::Bytes reply = c.recv_bytes();
//     c.send(std::vector<int>{1, 2});        // any type mpx::encode handles
//     auto v = c.recv<std::vector<int>>();
//
// Why a class of its own and not mpx::Connection (mpx/connection.hpp): a
// Pipe's Connection carries messages through shared-memory rings and keeps
// several concurrent senders atomic; a socket carries a byte stream that a
// peer in any language may share (Python's Listener and Client). The two
// contracts differ (framing, EOF, what fileno() means, thread safety), so
// one type for both would make one of them false. The names of the calls are
// Connection's (and Python's), so code reads the same.
//
// Contract
// - Framing is Python's, byte for byte: each message is a 4-byte big-endian
//   signed length and the bytes; a message over 0x7fffffff bytes is the length
//   -1, an 8-byte big-endian length and the bytes. A Python Connection on the
//   other end reads and writes the same messages (send_bytes/recv_bytes;
//   send<T>/recv<T> carry mpx::encode's bytes, which Python sees as bytes).
// - A SocketConnection is a shared handle: copies share the socket (and the
//   part of a message read so far); close() closes it for all of them; the
//   last copy closes it on destruction. The socket is close-on-exec; a
//   forked child inherits it (with a copy of any partial message).
//   Like Python's, a connection is not thread-safe: at most one thread may
//   send and at most one may receive (recv*, poll) at a time; one sender
//   and one receiver may run together (they touch disjoint state). close()
//   must not race with a call in another thread.
// - Receiving: recv_bytes() blocks until a whole message arrived.
//   recv_bytes(timeout) returns nullopt when it did not arrive in time; the
//   part already read is kept (in this process) and the next call goes on
//   from there, so a timeout never tears the stream. Reads never go past the
//   end of the current message, so what is still in the socket can be read by
//   another process that holds the socket. poll(timeout) reads the waiting
//   message in the same way and returns true once it is whole, the peer has
//   closed, or its length was refused (recv then does not block); false when
//   the timeout expired first. recv<T> throws DecodeError for a message that
//   is not an mpx-encoded T.
//   A zero or negative timeout never waits (Python's rule, as everywhere in mpx).
// - recv_bytes_into(buffer, offset) copies the message to buffer[offset..]
//   and returns its size; when it does not fit, it throws BufferTooShort,
//   which carries the whole message (the message is consumed, as in Python).
// - Message size: a length over max_message_size() (default
//   kDefaultMaxMessageSize, the largest the 4-byte header can say) or a
//   negative length other than -1 throws MessageLengthError; the stream can
//   not be resynchronised, so the connection is no longer readable after it
//   (Python's recv_bytes(maxlength) does the same). set_max_message_size
//   raises or lowers the limit for this connection (all copies).
// - End of file: recv throws EOFError when the peer closed (or died), at a
//   message boundary or in the middle of a message (Python raises OSError for
//   the latter; both mean the message will never come), and for a connection
//   reset by the peer.
// - Sending: send_bytes writes the whole message; it blocks while the socket
//   buffer is full. The timed variant throws SendTimeoutError when the
//   timeout expires: if nothing of the message was written the connection
//   stays usable; if part of it was, the stream would be torn, so the
//   connection is shut down for writing (the peer gets EOFError) and every
//   later send throws ConnectionError. Sending to a closed peer throws
//   BrokenPipeError; no SIGPIPE is raised (MSG_NOSIGNAL).
// - send_bytes(buffer, offset, size) sends buffer[offset, offset + size), as
//   Python's; an offset or size past the end throws ConnectionError.
// - Any call after close() throws ConnectionError; close() again does nothing.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string_view>

#include "mpx/connection.hpp"
#include "mpx/error.hpp"
#include "mpx/serialization.hpp"

namespace mpx {

// recv_bytes_into(buffer) with a message larger than the space in the buffer
// (Python's BufferTooShort); message() is the whole message.
class BufferTooShort : public ConnectionError {
 public:
  BufferTooShort(Bytes message, std::size_t room);
  [[nodiscard]] const Bytes& message() const noexcept { return message_; }

 private:
  Bytes message_;
};

// A message length the receiver refuses: over max_message_size(), or negative
// (malformed). The connection is no longer readable after it.
class MessageLengthError : public ConnectionError {
 public:
  using ConnectionError::ConnectionError;
};

// The default max_message_size(): 0x7fffffff, the largest length of Python's
// 4-byte header. Larger messages (Python's 8-byte header) need
// set_max_message_size.
inline constexpr std::uint64_t kDefaultMaxMessageSize = 0x7fffffff;

namespace detail {
struct SocketConnectionState;
// Python's header for a message of n bytes: 4 bytes, or 12 when n > 0x7fffffff.
[[nodiscard]] std::size_t frame_header(std::uint64_t n, std::byte (&out)[12]) noexcept;
}  // namespace detail

class SocketConnection {
 public:
  using Timeout = std::chrono::duration<double>;

  SocketConnection() = default;  // not connected: every call throws ConnectionError
  // Takes ownership of a connected stream socket (Python's Connection(handle)).
  [[nodiscard]] static SocketConnection adopt(int fd);

  void send_bytes(std::span<const std::byte> message);
  void send_bytes(std::string_view message) { send_bytes(as_bytes(message)); }
  void send_bytes(std::span<const std::byte> buffer, std::size_t offset, std::optional<std::size_t> size = {});
  // Throws SendTimeoutError after `timeout` (see the contract above).
  void send_bytes(std::span<const std::byte> message, Timeout timeout);
  void send_bytes(std::string_view message, Timeout timeout) { send_bytes(as_bytes(message), timeout); }

  [[nodiscard]] Bytes recv_bytes();
  [[nodiscard]] std::optional<Bytes> recv_bytes(Timeout timeout);
  // Python's recv_bytes(maxlength): a longer message throws MessageLengthError.
  [[nodiscard]] Bytes recv_bytes(std::uint64_t maxlength);
  [[nodiscard]] std::optional<Bytes> recv_bytes(std::uint64_t maxlength, Timeout timeout);
  // Copies the next message to buffer[offset..] and returns its size; throws
  // BufferTooShort (carrying the message) when it does not fit.
  std::size_t recv_bytes_into(std::span<std::byte> buffer, std::size_t offset = 0);
  // As above; nullopt when no whole message arrived within `timeout`.
  std::optional<std::size_t> recv_bytes_into(std::span<std::byte> buffer, std::size_t offset, Timeout timeout);

  template <class T>
  void send(const T& value) {
    thread_local Bytes buffer;
    encode_into(buffer, value);
    send_bytes(std::span<const std::byte>(buffer.data(), buffer.size()));
  }
  template <class T>
  void send(const T& value, Timeout timeout) {
    thread_local Bytes buffer;
    encode_into(buffer, value);
    send_bytes(std::span<const std::byte>(buffer.data(), buffer.size()), timeout);
  }
  template <class T>
  [[nodiscard]] T recv() {
    return decode<T>(recv_bytes());
  }
  template <class T>
  [[nodiscard]] std::optional<T> recv(Timeout timeout) {
    auto bytes = recv_bytes(timeout);
    if (!bytes) return std::nullopt;
    return decode<T>(*bytes);
  }

  // True when a whole message (or end of file) is waiting; waits up to `timeout`.
  [[nodiscard]] bool poll(Timeout timeout = Timeout::zero());
  void close();
  [[nodiscard]] bool closed() const;
  [[nodiscard]] int fileno() const;
  [[nodiscard]] std::uint64_t max_message_size() const;
  void set_max_message_size(std::uint64_t max);

 private:
  explicit SocketConnection(std::shared_ptr<detail::SocketConnectionState> s) : s_(std::move(s)) {}
  static std::span<const std::byte> as_bytes(std::string_view s) {
    return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
  }
  detail::SocketConnectionState& state() const;

  std::shared_ptr<detail::SocketConnectionState> s_;
};

}  // namespace mpx
