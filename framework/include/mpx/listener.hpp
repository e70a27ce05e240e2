// mpx/listener.hpp: Listener and Client, as multiprocessing.connection's,
// over Unix sockets (a path, or a Linux abstract name) and TCP.
//
//     mpx::Listener listener(mpx::Address::tcp("127.0.0.1", 0), "secret");
//     auto port = listener.address().port();            // the port bound
//     // elsewhere: auto c = mpx::Client(mpx::Address::tcp("127.0.0.1", port), "secret");
//     mpx::SocketConnection c = listener.accept();     // the challenge ran both ways
//
// Contract
// - An Address is Python's: AF_UNIX with a path (a leading NUL byte names the
//   Linux abstract namespace, as in Python; Address::abstract adds it), or
//   AF_INET with an IPv4 host (dotted, or a name resolved once) and a port.
// - Listener(address, authkey, backlog) binds and listens. A TCP listener sets
//   SO_REUSEADDR (as Python's); port 0 picks a free port, which address()
//   reports. Listener(family, authkey) picks an address: a fresh path in
//   $TMPDIR (or /tmp), or 127.0.0.1 with a free port. The listener unlinks
//   its socket path on close() or destruction (not an abstract name). Binding
//   to a path that exists fails with mpx::OSError (EADDRINUSE), as in Python.
// - accept() waits for a client, then, if authkey is not empty, runs
//   deliver_challenge and answer_challenge (mpx/auth.hpp) on the new
//   connection before returning it: a client with another key makes accept
//   throw AuthenticationError (the client's side throws it too). An empty
//   authkey means no authentication on either side (Python's Listener skips
//   the challenge for an empty key; mpx's Client does too, so two mpx ends
//   agree; a Python Client with b'' would wait for a challenge).
//   accept(timeout) returns nullopt when no client came in time, or when the
//   one that came did not finish the challenge in time (it is disconnected);
//   the timeout bounds the whole call. A zero or negative timeout never waits
//   (so with an authkey it drops even a waiting client: the challenge needs a
//   round trip).
// - Client(address, authkey) connects and, if authkey is not empty, runs
//   answer_challenge then deliver_challenge. The timed variant bounds connect
//   and challenge together and throws TimeoutError. A refused connection
//   (nobody listening) throws mpx::OSError with code() ECONNREFUSED (or
//   ENOENT for a missing path).
// - Connections are SocketConnection (mpx/socket_connection.hpp), with
//   Python's framing: an mpx Client talks to a Python Listener and a Python
//   Client to an mpx Listener, for raw bytes (send_bytes / recv_bytes) with
//   the same key. TCP connections have TCP_NODELAY set.
// - Errors: a system call that fails throws mpx::OSError (code() is errno;
//   ENAMETOOLONG for a Unix address over 107 bytes); a host name that does
//   not resolve throws ConnectionError; accept() after close() throws
//   ConnectionError. accept() and Client() also throw what the challenge
//   throws (AuthenticationError, EOFError when the peer hangs up in it). A Listener is move-only;
//   it is not shared by fork (a child may accept on its copy of the socket,
//   but only the process that made it unlinks the path).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <sys/types.h>

#include "mpx/auth.hpp"
#include "mpx/socket_connection.hpp"
#include "mpx/sync_error.hpp"

namespace mpx {

namespace detail {
class Deadline;
}

// Python's 'AF_UNIX' and 'AF_INET' (there is no 'AF_PIPE' off Windows).
enum class Family { unix_socket, inet };

class Address {
 public:
  // AF_UNIX. A path that starts with '\0' is an abstract name (Python's spelling).
  [[nodiscard]] static Address unix_socket(std::string path);
  // AF_UNIX in the Linux abstract namespace: `name` without the leading NUL.
  [[nodiscard]] static Address abstract(std::string_view name);
  // AF_INET: an IPv4 address or a host name, and a port (0: any free one).
  [[nodiscard]] static Address tcp(std::string host, std::uint16_t port);

  [[nodiscard]] Family family() const noexcept { return family_; }
  [[nodiscard]] const std::string& path() const noexcept { return path_; }  // AF_UNIX
  [[nodiscard]] bool is_abstract() const noexcept { return !path_.empty() && path_[0] == '\0'; }
  [[nodiscard]] const std::string& host() const noexcept { return host_; }  // AF_INET
  [[nodiscard]] std::uint16_t port() const noexcept { return port_; }       // AF_INET
  // "path", "@name" (abstract) or "host:port", for messages.
  [[nodiscard]] std::string to_string() const;
  friend bool operator==(const Address&, const Address&) = default;

 private:
  Family family_ = Family::unix_socket;
  std::string path_;
  std::string host_;
  std::uint16_t port_ = 0;
};

class Listener {
 public:
  using Timeout = SocketConnection::Timeout;

  explicit Listener(const Address& address, std::string authkey = {}, int backlog = 1);
  explicit Listener(Family family, std::string authkey = {}, int backlog = 1);
  Listener(Listener&& other) noexcept;
  Listener& operator=(Listener&& other) noexcept;
  Listener(const Listener&) = delete;
  Listener& operator=(const Listener&) = delete;
  ~Listener();

  [[nodiscard]] SocketConnection accept();
  [[nodiscard]] std::optional<SocketConnection> accept(Timeout timeout);
  void close();
  [[nodiscard]] bool closed() const noexcept { return fd_ < 0; }
  // The address bound (with the port chosen for port 0).
  [[nodiscard]] const Address& address() const noexcept { return address_; }
  // The peer address of the last accepted connection (Python's last_accepted).
  [[nodiscard]] const std::optional<Address>& last_accepted() const noexcept { return last_accepted_; }
  [[nodiscard]] int fileno() const noexcept { return fd_; }

 private:
  std::optional<SocketConnection> accept_until(const detail::Deadline& deadline);

  int fd_ = -1;
  Address address_;
  std::string authkey_;
  std::optional<Address> last_accepted_;
  pid_t owner_ = 0;  // the process that unlinks the path
};

[[nodiscard]] SocketConnection Client(const Address& address, std::string_view authkey = {});
[[nodiscard]] SocketConnection Client(const Address& address, std::string_view authkey,
                                      SocketConnection::Timeout timeout);

}  // namespace mpx
