// The manager's connection (not installed): plain (a SocketConnection, as
// before) or TLS over the same TCP socket (OpenSSL), with the same framing
// (a 4-byte big-endian length, then the bytes) and the same HMAC challenge
// on the authkey run inside TLS.
//
// TLS runs over memory BIOs: this file does the socket I/O itself, with
// MSG_NOSIGNAL (no SIGPIPE, no signal handler) and poll bounded by the
// caller's deadline, so a silent peer costs at most that deadline. A timeout
// or an error leaves a TLS connection unusable: callers drop it.
#pragma once

#include <openssl/types.h>

#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "mpx/detail/deadline.hpp"
#include "mpx/manager.hpp"
#include "mpx/socket_connection.hpp"

namespace mpx::detail::manager {

// An OpenSSL context made from ManagerTlsOptions. Throws ManagerTlsError
// naming the file that cannot be loaded.
class TlsContext {
 public:
  static std::shared_ptr<const TlsContext> server(const ManagerTlsOptions& options);
  static std::shared_ptr<const TlsContext> client(const ManagerTlsOptions& options);
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;
  ~TlsContext();
  SSL_CTX* get() const { return ctx_; }
  // Client: the name the server's certificate must carry ("" = the address' host).
  const std::string& server_name() const { return server_name_; }

 private:
  explicit TlsContext(const ManagerTlsOptions& options, bool server);
  SSL_CTX* ctx_ = nullptr;
  std::string passphrase_;  // the key's; OpenSSL's callback reads it while loading
  std::string server_name_;
};

class Transport {
 public:
  Transport() = default;
  explicit Transport(SocketConnection socket) : socket_(std::move(socket)) {}
  Transport(Transport&&) noexcept;
  Transport& operator=(Transport&&) noexcept;
  ~Transport();

  // The TLS handshake on a connected TCP socket, within `deadline`. Throws
  // ManagerTlsError when it fails (the peer's reason, or the certificate
  // check's), TimeoutError when it did not finish in time, EOFError when the
  // peer hung up. `host` (client): the name or IP the certificate must carry.
  static Transport tls_accept(SocketConnection socket, const TlsContext& ctx, const Deadline& deadline);
  static Transport tls_connect(SocketConnection socket, const TlsContext& ctx, const std::string& host,
                               const Deadline& deadline);

  // The challenge both ways, as Listener::accept / Client run it (the side
  // that accepted delivers first); nothing for an empty key. Throws
  // AuthenticationError for a wrong key, TimeoutError past the deadline.
  void authenticate(std::string_view authkey, bool accepted, const Deadline& deadline);

  [[nodiscard]] bool tls() const noexcept { return ssl_ != nullptr; }
  [[nodiscard]] int fileno() const { return socket_.fileno(); }
  void set_max_message_size(std::uint64_t max);

  // Untimed calls block as SocketConnection's do; timed ones throw
  // TimeoutError (send) or return nullopt (recv) past the deadline.
  void send_bytes(std::span<const std::byte> message, const Deadline& deadline = Deadline::never());
  [[nodiscard]] std::optional<Bytes> recv_bytes(const Deadline& deadline);
  [[nodiscard]] Bytes recv_bytes();
  template <class T>
  void send(const T& value, const Deadline& deadline = Deadline::never()) {
    const Bytes b = encode(value);
    send_bytes(std::span<const std::byte>(b.data(), b.size()), deadline);
  }
  template <class T>
  [[nodiscard]] std::optional<T> recv(const Deadline& deadline) {
    auto b = recv_bytes(deadline);
    if (!b) return std::nullopt;
    return decode<T>(*b);
  }

 private:
  class Messages;  // this transport as a detail::MessageStream (the challenge)
  Transport(SocketConnection socket, SSL* ssl);
  template <class Op>
  bool drive(Op op, const Deadline& deadline, const char* doing);
  bool fill(const Deadline& deadline);
  bool flush(const Deadline& deadline);
  bool read_exact(std::byte* out, std::size_t n, const Deadline& deadline);
  std::optional<Bytes> tls_recv(std::uint64_t max, const Deadline& deadline);
  void handshake(const Deadline& deadline);

  SocketConnection socket_;
  SSL* ssl_ = nullptr;           // owns its two memory BIOs
  std::vector<char> out_;        // TLS bytes not yet written to the socket
  std::size_t out_sent_ = 0;
  std::uint64_t max_message_ = kDefaultMaxMessageSize;
};

// Client side: this process' TLS context for `options` (made on first use,
// then shared by its threads). A forked child makes its own rather than touch
// its parent's cache, whose lock another thread of the parent may have held
// at the fork. Throws ManagerTlsError as TlsContext::client.
std::shared_ptr<const TlsContext> client_context(const ManagerTlsOptions& options);

}  // namespace mpx::detail::manager
