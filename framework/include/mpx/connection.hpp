// mpx/connection.hpp: one end of a Pipe, as multiprocessing.connection.Connection.
//
//     auto [a, b] = mpx::Pipe();          // duplex
//     a.send(std::string("hi"));          // any type mpx::encode handles
//     auto s = b.recv<std::string>();     // "hi"
//
// Contract
// - Pipe() makes one shared-memory message ring per direction (the same MPMC
//   ring as mpx::Queue, detail/ring.hpp) plus an AF_UNIX socketpair that only
//   tracks who still holds each end (it carries no data). A Connection is a
//   shared handle to one end: copies in one process share it; close() closes
//   it for all of them; the last copy closes it on destruction. Forked
//   children inherit it. Any thread of any process holding the end may send
//   and recv; each message is delivered whole to at most one receiver, in
//   the order the sends claimed their slot: exactly one unless a process
//   dies holding it (the queue's table, docs/queues-and-pipes.md).
// - Messages: send_bytes/recv_bytes move raw bytes of any size; send<T> and
//   recv<T> move one value through mpx::encode/decode (recv<T> throws
//   DecodeError for a message of another type). Messages are never torn, even
//   with several concurrent senders or receivers on one end.
// - Blocking: recv blocks until a message arrives (spinning briefly first);
//   recv(timeout) returns nullopt on timeout; poll(timeout) tells whether a
//   message (or end of file) is waiting. send blocks while the direction's
//   ring is full (4096 messages; 256 over 48 bytes and 16 over 4 KiB), and a
//   message over 256 KiB until the receiver has copied all but the last
//   256 KiB of it (it streams through a lane). send(x, timeout) and
//   send_bytes(b, timeout) throw SendTimeoutError when the timeout expires
//   first; then nothing of the message is delivered: a streamed message
//   already begun is marked aborted and the receiver drops it whole, so the
//   next message is intact (it still takes its slot until a receiver passes
//   it). A zero or negative timeout never waits (poll, recv and send; Python's
//   rule, docs/queues-and-pipes.md, "Timeouts").
// - End of file: recv throws EOFError once the ring is empty and every copy of
//   the peer end, in every process, is closed (a process that dies closes its
//   copies); detected within 1-20 ms. After fork, both processes hold both
//   ends: as in Python, close the ends you do not use, or EOF never comes.
//   An end may also be an argument of a process started with forkserver or
//   spawn: its rings and socket travel as descriptors (the child holds a copy
//   of the end, as a forked child would); encoding one anywhere else throws
//   SyncError.
//   send to a peer closed everywhere throws BrokenPipeError (checked at most
//   once per millisecond per end while sends succeed, and while blocked).
// - Direction: the ends of Pipe(false) are receive-only and send-only; the
//   wrong call throws ConnectionError naming the direction. Any call after
//   close() throws ConnectionError.
// - fileno() is the socket: it polls readable when a message may be waiting
//   or at end of file, so it can be handed to epoll or any event loop. The
//   receiver arms it: after it polls readable, recv until poll() returns
//   false (or recv(timeout) / recv_bytes(timeout) return nullopt): that
//   re-arms it, and the next send makes it readable again. A sender pays one
//   small write on the socket per arming, nothing while nobody polls.
//   mpx::wait (wait.hpp) waits on connections, queues and processes.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string_view>

#include "mpx/error.hpp"
#include "mpx/serialization.hpp"

namespace mpx {

// Misuse of a connection: wrong direction, use after close, broken framing.
class ConnectionError : public Error {
 public:
  using Error::Error;
};

// recv on a connection whose peer is closed everywhere (Python's EOFError).
class EOFError : public ConnectionError {
 public:
  EOFError() : ConnectionError("mpx::EOFError: the peer end of the pipe is closed") {}
  explicit EOFError(const std::string& what) : ConnectionError("mpx::EOFError: " + what) {}
};

// send to a connection whose peer is closed everywhere (Python's BrokenPipeError).
class BrokenPipeError : public ConnectionError {
 public:
  BrokenPipeError() : ConnectionError("mpx::BrokenPipeError: the peer end of the pipe is closed") {}
};

// send(x, timeout) on a live peer that did not make room in time; nothing of
// the message was delivered. A TimeoutError (mpx/error.hpp), as every timed
// wait of mpx that throws when it runs out.
class SendTimeoutError : public TimeoutError {
 public:
  using TimeoutError::TimeoutError;
};

class Connection;
namespace detail {
struct ConnectionState;
// wait.hpp: a message waiting or end of file; with arm, arms fileno() when not.
bool connection_ready(const Connection& c, bool arm);
// An end as a process argument (forkserver, spawn): descriptor indexes
// (fd_passing.hpp) of its socket and rings, and its direction.
struct PassedConnection {
  std::uint32_t socket = 0;
  std::uint32_t rings[2] = {0, 0};
  std::uint8_t ring_count = 0;  // 1: Pipe(false)
  std::uint8_t end = 0;
  bool readable = false;
  bool writable = false;

  template <class Archive>
  void serialize(Archive& ar) {
    ar(socket, rings[0], rings[1], ring_count, end, readable, writable);
  }
};
PassedConnection send_connection(const Connection& c);
Connection receive_connection(const PassedConnection& passed);
}  // namespace detail

class Connection {
 public:
  using Timeout = std::chrono::duration<double>;

  Connection() = default;  // not connected: every call throws ConnectionError

  void send_bytes(std::span<const std::byte> message);
  void send_bytes(std::string_view message) { send_bytes(as_bytes(message)); }
  // Throws SendTimeoutError after `timeout` (see the contract above).
  void send_bytes(std::span<const std::byte> message, Timeout timeout);
  void send_bytes(std::string_view message, Timeout timeout) { send_bytes(as_bytes(message), timeout); }
  [[nodiscard]] Bytes recv_bytes();
  [[nodiscard]] std::optional<Bytes> recv_bytes(Timeout timeout);

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
    thread_local Bytes buffer;
    recv_into(buffer, nullptr);
    return decode<T>(buffer);
  }
  template <class T>
  [[nodiscard]] std::optional<T> recv(Timeout timeout) {
    thread_local Bytes buffer;
    if (!recv_into(buffer, &timeout)) return std::nullopt;
    return decode<T>(buffer);
  }

  // True when a message (or end of file) is waiting; waits up to `timeout`.
  [[nodiscard]] bool poll(Timeout timeout = Timeout::zero());
  void close();
  [[nodiscard]] bool closed() const;
  [[nodiscard]] bool readable() const;
  [[nodiscard]] bool writable() const;
  [[nodiscard]] int fileno() const;

  // As a forkserver or spawn argument only (see the contract); SyncError elsewhere.
  template <class Archive>
  void save(Archive& ar) const {
    ar(detail::send_connection(*this));
  }
  template <class Archive>
  void load(Archive& ar) {
    detail::PassedConnection passed;
    ar(passed);
    *this = detail::receive_connection(passed);
  }

 private:
  friend std::pair<Connection, Connection> make_pipe(bool duplex);
  friend bool detail::connection_ready(const Connection& c, bool arm);
  friend detail::PassedConnection detail::send_connection(const Connection& c);
  friend Connection detail::receive_connection(const detail::PassedConnection& passed);
  explicit Connection(std::shared_ptr<detail::ConnectionState> s) : s_(std::move(s)) {}
  static std::span<const std::byte> as_bytes(std::string_view s) {
    return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
  }
  void send_until(std::span<const std::byte> message, const Timeout* timeout);
  // Receives one whole message into `out`; false on timeout (timeout == nullptr: block).
  bool recv_into(Bytes& out, const Timeout* timeout);
  detail::ConnectionState& state(bool for_send) const;

  std::shared_ptr<detail::ConnectionState> s_;
};

// A connection whose messages are all of type T.
template <class T>
class TypedConnection : public Connection {
 public:
  TypedConnection() = default;
  explicit TypedConnection(Connection c) : Connection(std::move(c)) {}
  void send(const T& value) { Connection::send<T>(value); }
  void send(const T& value, Timeout timeout) { Connection::send<T>(value, timeout); }
  [[nodiscard]] T recv() { return Connection::recv<T>(); }
  [[nodiscard]] std::optional<T> recv(Timeout timeout) { return Connection::recv<T>(timeout); }
};

// (receive end, send end) for duplex = false; two duplex ends otherwise.
[[nodiscard]] std::pair<Connection, Connection> make_pipe(bool duplex);

}  // namespace mpx
