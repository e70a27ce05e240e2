// The manager's connection: plain or TLS (transport.hpp).
#include "transport.hpp"

#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <map>
#include <mutex>

#include "mpx/auth.hpp"
#include "mpx/detail/challenge.hpp"
#include "mpx/sync_error.hpp"

namespace mpx::detail::manager {

namespace {

using Timeout = SocketConnection::Timeout;

// What OpenSSL's error queue says (emptied).
std::string ssl_errors() {
  std::string out;
  while (const unsigned long e = ERR_get_error()) {
    char buf[256];
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "no detail from OpenSSL" : out;
}

// Never prompts on a terminal (OpenSSL's default would): the passphrase given, or none.
int passphrase_callback(char* buf, int size, int, void* userdata) {
  const auto* p = static_cast<const std::string*>(userdata);
  if (!p || p->empty() || p->size() > static_cast<std::size_t>(size)) return 0;
  std::memcpy(buf, p->data(), p->size());
  return static_cast<int>(p->size());
}

// Waits until `fd` is ready for `events` (or in error); false past the deadline.
bool wait_fd(int fd, short events, const Deadline& deadline) {
  pollfd p{fd, events, 0};
  for (;;) {
    const int r = ::poll(&p, 1, deadline.poll_timeout_ms());
    if (r > 0) return true;
    if (r == 0 && deadline.expired()) return false;
    if (r < 0 && errno != EINTR) throw OSError(errno, "mpx::Manager: poll");
  }
}

std::span<const std::byte> bytes_of(std::string_view s) { return std::as_bytes(std::span(s.data(), s.size())); }

SSL* new_ssl(const TlsContext& ctx) {
  SSL* ssl = SSL_new(ctx.get());
  BIO* in = BIO_new(BIO_s_mem());
  BIO* out = BIO_new(BIO_s_mem());
  if (!ssl || !in || !out) {
    BIO_free(in);
    BIO_free(out);
    SSL_free(ssl);
    throw ManagerTlsError("mpx::Manager: TLS: cannot make a connection: " + ssl_errors());
  }
  BIO_set_mem_eof_return(in, -1);  // empty means "wait for the socket", not end of file
  SSL_set_bio(ssl, in, out);
  return ssl;
}

}  // namespace

// ---------------------------------------------------------------- TlsContext

TlsContext::TlsContext(const ManagerTlsOptions& o, bool server) : passphrase_(o.passphrase), server_name_(o.server_name) {
  std::unique_ptr<SSL_CTX, void (*)(SSL_CTX*)> ctx(SSL_CTX_new(server ? TLS_server_method() : TLS_client_method()),
                                                   SSL_CTX_free);
  if (!ctx) throw ManagerTlsError("mpx::Manager: TLS: SSL_CTX_new failed: " + ssl_errors());
  auto cannot_load = [](const char* what, const std::string& file) {
    return ManagerTlsError("mpx::Manager: TLS: cannot load the " + std::string(what) + " '" + file + "': " +
                           ssl_errors());
  };
  SSL_CTX_set_min_proto_version(ctx.get(), TLS1_2_VERSION);
  SSL_CTX_set_default_passwd_cb(ctx.get(), passphrase_callback);
  SSL_CTX_set_default_passwd_cb_userdata(ctx.get(), &passphrase_);
  if (server && (o.certificate.empty() || o.key.empty()))
    throw ManagerTlsError("mpx::Manager: TLS: a server needs tls.certificate and tls.key");
  if (o.certificate.empty() != o.key.empty())
    throw ManagerTlsError("mpx::Manager: TLS: tls.certificate and tls.key go together");
  if (!o.certificate.empty()) {
    if (SSL_CTX_use_certificate_chain_file(ctx.get(), o.certificate.c_str()) != 1)
      throw cannot_load("certificate", o.certificate);
    if (SSL_CTX_use_PrivateKey_file(ctx.get(), o.key.c_str(), SSL_FILETYPE_PEM) != 1) throw cannot_load("key", o.key);
    if (SSL_CTX_check_private_key(ctx.get()) != 1)
      throw ManagerTlsError("mpx::Manager: TLS: the key '" + o.key + "' does not match the certificate '" +
                            o.certificate + "'");
  }
  if (!o.cafile.empty() && SSL_CTX_load_verify_locations(ctx.get(), o.cafile.c_str(), nullptr) != 1)
    throw cannot_load("CA file", o.cafile);
  if (server) {
    // No session tickets: after the handshake only our frames cross (the
    // server's liveness check reads any byte from a waiting client as a breach).
    SSL_CTX_set_num_tickets(ctx.get(), 0);
    SSL_CTX_set_session_cache_mode(ctx.get(), SSL_SESS_CACHE_OFF);
    if (!o.cafile.empty()) {
      if (STACK_OF(X509_NAME)* names = SSL_load_client_CA_file(o.cafile.c_str()))
        SSL_CTX_set_client_CA_list(ctx.get(), names);
      SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
    }
  } else {
    if (o.cafile.empty() && SSL_CTX_set_default_verify_paths(ctx.get()) != 1)
      throw ManagerTlsError("mpx::Manager: TLS: cannot load the system's CA store: " + ssl_errors());
    SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  }
  ctx_ = ctx.release();
}

TlsContext::~TlsContext() { SSL_CTX_free(ctx_); }

std::shared_ptr<const TlsContext> TlsContext::server(const ManagerTlsOptions& options) {
  return std::shared_ptr<const TlsContext>(new TlsContext(options, true));
}
std::shared_ptr<const TlsContext> TlsContext::client(const ManagerTlsOptions& options) {
  return std::shared_ptr<const TlsContext>(new TlsContext(options, false));
}

namespace {

// One process' client contexts. The lock is only ever taken by this
// process' threads: a forked child never locks its parent's cache (a thread
// of the parent may have held it at the fork), it makes its own.
struct ClientContexts {
  explicit ClientContexts(pid_t p) : pid(p) {}
  const pid_t pid;
  std::mutex mutex;
  std::map<ManagerTlsOptions, std::shared_ptr<const TlsContext>> by_options;
};
std::atomic<ClientContexts*> client_contexts{nullptr};

ClientContexts& this_process_contexts() {
  const pid_t self = ::getpid();
  ClientContexts* c = client_contexts.load(std::memory_order_acquire);
  while (!c || c->pid != self) {
    // None yet, or the parent's (inherited by fork): that one is left alone,
    // its lock may be held for good. Never freed: proxies may be used during
    // static destruction.
    auto* fresh = new ClientContexts(self);
    if (client_contexts.compare_exchange_strong(c, fresh, std::memory_order_acq_rel)) return *fresh;
    delete fresh;  // another thread of this process was first; `c` is its cache
  }
  return *c;
}

}  // namespace

std::shared_ptr<const TlsContext> client_context(const ManagerTlsOptions& options) {
  auto& cache = this_process_contexts();
  {
    std::lock_guard g(cache.mutex);
    if (auto it = cache.by_options.find(options); it != cache.by_options.end()) return it->second;
  }
  auto ctx = TlsContext::client(options);  // loads files: not under the lock
  std::lock_guard g(cache.mutex);
  return cache.by_options.try_emplace(options, std::move(ctx)).first->second;
}

// ---------------------------------------------------------------- Transport

Transport::Transport(SocketConnection socket, SSL* ssl) : socket_(std::move(socket)), ssl_(ssl) {}

Transport::Transport(Transport&& o) noexcept
    : socket_(std::move(o.socket_)),
      ssl_(std::exchange(o.ssl_, nullptr)),
      out_(std::move(o.out_)),
      out_sent_(std::exchange(o.out_sent_, 0)),
      max_message_(o.max_message_) {}

Transport& Transport::operator=(Transport&& o) noexcept {
  if (this != &o) {
    SSL_free(ssl_);
    socket_ = std::move(o.socket_);
    ssl_ = std::exchange(o.ssl_, nullptr);
    out_ = std::move(o.out_);
    out_sent_ = std::exchange(o.out_sent_, 0);
    max_message_ = o.max_message_;
  }
  return *this;
}

// No close_notify: a forked child's copy must never write into its parent's
// stream, and the framing already tells a cut message from a whole one.
Transport::~Transport() { SSL_free(ssl_); }

Transport Transport::tls_accept(SocketConnection socket, const TlsContext& ctx, const Deadline& deadline) {
  Transport t(std::move(socket), new_ssl(ctx));
  SSL_set_accept_state(t.ssl_);
  t.handshake(deadline);
  return t;
}

Transport Transport::tls_connect(SocketConnection socket, const TlsContext& ctx, const std::string& host,
                                 const Deadline& deadline) {
  Transport t(std::move(socket), new_ssl(ctx));
  SSL_set_connect_state(t.ssl_);
  const std::string& name = ctx.server_name().empty() ? host : ctx.server_name();
  X509_VERIFY_PARAM* param = SSL_get0_param(t.ssl_);
  in_addr v4{};
  in6_addr v6{};
  bool ok;
  if (::inet_pton(AF_INET, name.c_str(), &v4) == 1 || ::inet_pton(AF_INET6, name.c_str(), &v6) == 1) {
    ok = X509_VERIFY_PARAM_set1_ip_asc(param, name.c_str()) == 1;
  } else {
    ok = X509_VERIFY_PARAM_set1_host(param, name.c_str(), 0) == 1 && SSL_set_tlsext_host_name(t.ssl_, name.c_str()) == 1;
  }
  if (!ok) throw ManagerTlsError("mpx::Manager: TLS: cannot check the server's name '" + name + "': " + ssl_errors());
  t.handshake(deadline);
  return t;
}

void Transport::handshake(const Deadline& deadline) {
  if (!drive([&] { return SSL_do_handshake(ssl_); }, deadline, "the TLS handshake") || !flush(deadline))
    throw TimeoutError("mpx::TimeoutError: mpx::Manager: the TLS handshake did not finish in time");
}

template <class Op>
bool Transport::drive(Op op, const Deadline& deadline, const char* doing) {
  for (;;) {
    ERR_clear_error();
    const int r = op();
    const int err = r > 0 ? SSL_ERROR_NONE : SSL_get_error(ssl_, r);
    switch (err) {
      case SSL_ERROR_NONE: return true;
      case SSL_ERROR_WANT_READ:
        // What OpenSSL wrote (a handshake flight) must reach the peer before we wait for its answer.
        if (!flush(deadline) || !fill(deadline)) return false;
        continue;
      case SSL_ERROR_WANT_WRITE:
        if (!flush(deadline)) return false;
        continue;
      case SSL_ERROR_ZERO_RETURN: throw EOFError("mpx::Manager: the peer closed the TLS connection");
      default: {
        std::string why = ssl_errors();
        if (const long v = SSL_get_verify_result(ssl_); v != X509_V_OK)
          why += std::string(" (certificate check: ") + X509_verify_cert_error_string(v) + ")";
        try {
          flush(Deadline::after(std::chrono::milliseconds(0)));  // the alert tells the peer why, if it fits now
        } catch (const Error&) {
        }
        throw ManagerTlsError(std::string("mpx::Manager: ") + doing + " failed: " + why);
      }
    }
  }
}

bool Transport::fill(const Deadline& deadline) {
  const int fd = socket_.fileno();
  char buf[16384];
  for (;;) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    if (n > 0) {
      if (BIO_write(SSL_get_rbio(ssl_), buf, static_cast<int>(n)) != n)
        throw ManagerTlsError("mpx::Manager: TLS: BIO_write failed: " + ssl_errors());
      return true;
    }
    if (n == 0) throw EOFError("mpx::Manager: the peer closed the connection");
    if (errno == EINTR) continue;
    if (errno == ECONNRESET) throw EOFError("mpx::Manager: the connection was reset by the peer");
    if (errno != EAGAIN && errno != EWOULDBLOCK) throw OSError(errno, "mpx::Manager: recv");
    if (!wait_fd(fd, POLLIN, deadline)) return false;
  }
}

bool Transport::flush(const Deadline& deadline) {
  BIO* w = SSL_get_wbio(ssl_);
  char buf[16384];
  for (int n; (n = BIO_read(w, buf, sizeof buf)) > 0;) out_.insert(out_.end(), buf, buf + n);
  const int fd = socket_.fileno();
  while (out_sent_ < out_.size()) {
    const ssize_t n = ::send(fd, out_.data() + out_sent_, out_.size() - out_sent_, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      out_sent_ += static_cast<std::size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (!wait_fd(fd, POLLOUT, deadline)) return false;
      continue;
    }
    if (n < 0 && (errno == EPIPE || errno == ECONNRESET)) throw BrokenPipeError();
    throw OSError(n < 0 ? errno : EIO, "mpx::Manager: send");
  }
  out_.clear();
  out_sent_ = 0;
  return true;
}

bool Transport::read_exact(std::byte* out, std::size_t n, const Deadline& deadline) {
  while (n > 0) {
    std::size_t got = 0;
    if (!drive([&] { return SSL_read_ex(ssl_, out, n, &got); }, deadline, "a TLS read")) return false;
    out += got;
    n -= got;
  }
  return true;
}

std::optional<Bytes> Transport::tls_recv(std::uint64_t max, const Deadline& deadline) {
  std::byte header[4];
  if (!read_exact(header, 4, deadline)) return std::nullopt;
  std::uint32_t raw = 0;
  for (auto b : header) raw = (raw << 8) | std::to_integer<std::uint32_t>(b);
  // Our peers never send the 12-byte header (their messages are <= kMaxMessage).
  if (raw > 0x7fffffffu || raw > max)
    throw MessageLengthError("mpx::Manager: a message length of " + std::to_string(raw) + " bytes is refused (limit " +
                             std::to_string(max) + ")");
  Bytes message(raw);
  if (!read_exact(message.data(), message.size(), deadline)) return std::nullopt;
  return message;
}

void Transport::set_max_message_size(std::uint64_t max) {
  max_message_ = max;
  if (!ssl_) socket_.set_max_message_size(max);
}

void Transport::send_bytes(std::span<const std::byte> message, const Deadline& deadline) {
  if (!ssl_) {
    if (auto left = deadline.remaining()) socket_.send_bytes(message, Timeout(*left));
    else socket_.send_bytes(message);
    return;
  }
  std::byte header[12];
  const std::size_t header_size = frame_header(message.size(), header);
  std::size_t written = 0;
  bool sent = drive([&] { return SSL_write_ex(ssl_, header, header_size, &written); }, deadline, "a TLS write");
  if (sent && !message.empty())
    sent = drive([&] { return SSL_write_ex(ssl_, message.data(), message.size(), &written); }, deadline, "a TLS write");
  if (!sent || !flush(deadline)) throw TimeoutError("mpx::TimeoutError: mpx::Manager: a TLS send timed out");
}

std::optional<Bytes> Transport::recv_bytes(const Deadline& deadline) {
  if (ssl_) return tls_recv(max_message_, deadline);
  if (auto left = deadline.remaining()) return socket_.recv_bytes(Timeout(*left));
  return socket_.recv_bytes();
}

Bytes Transport::recv_bytes() { return *recv_bytes(Deadline::never()); }

// The transport as the framework's message stream: the challenge is the one
// of mpx/auth.hpp, plain or inside TLS.
class Transport::Messages final : public MessageStream {
 public:
  explicit Messages(Transport& t) : t_(t) {}
  void send(std::string_view message, const Deadline& deadline) override { t_.send_bytes(bytes_of(message), deadline); }
  std::optional<Bytes> receive(std::uint64_t max, const Deadline& deadline) override {
    if (t_.ssl_) return t_.tls_recv(max, deadline);
    if (auto left = deadline.remaining()) return t_.socket_.recv_bytes(max, Timeout(*left));
    return t_.socket_.recv_bytes(max);
  }

 private:
  Transport& t_;
};

void Transport::authenticate(std::string_view authkey, bool accepted, const Deadline& deadline) {
  if (authkey.empty()) return;
  Messages stream(*this);
  if (accepted) {
    detail::deliver_challenge(stream, authkey, deadline);
    detail::answer_challenge(stream, authkey, deadline);
  } else {
    detail::answer_challenge(stream, authkey, deadline);
    detail::deliver_challenge(stream, authkey, deadline);
  }
}

}  // namespace mpx::detail::manager
