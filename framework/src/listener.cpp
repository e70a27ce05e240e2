// Listener and Client over Unix and TCP sockets (see mpx/listener.hpp).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "mpx/detail/deadline.hpp"
#include "mpx/detail/unique_fd.hpp"
#include "mpx/listener.hpp"
#include "mpx/sync_error.hpp"

namespace mpx {

using detail::Deadline;
using detail::UniqueFd;

namespace {

// A socket address for bind/connect.
struct SockAddr {
  sockaddr_storage storage{};
  socklen_t length = 0;
  [[nodiscard]] const sockaddr* get() const { return reinterpret_cast<const sockaddr*>(&storage); }
};

SockAddr to_sockaddr(const Address& a) {
  SockAddr out;
  if (a.family() == Family::unix_socket) {
    auto* un = reinterpret_cast<sockaddr_un*>(&out.storage);
    un->sun_family = AF_UNIX;
    const std::string& p = a.path();
    // A path needs its terminating NUL; an abstract name is its bytes exactly.
    const std::size_t room = sizeof(un->sun_path) - (a.is_abstract() ? 0 : 1);
    if (p.empty() || p.size() > room) throw OSError(ENAMETOOLONG, "mpx: AF_UNIX address '" + a.to_string() + "'");
    std::memcpy(un->sun_path, p.data(), p.size());
    out.length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + p.size() + (a.is_abstract() ? 0 : 1));
    return out;
  }
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (int rc = ::getaddrinfo(a.host().c_str(), nullptr, &hints, &found); rc != 0 || !found)
    throw ConnectionError("mpx: cannot resolve host '" + a.host() + "': " + ::gai_strerror(rc));
  auto* in = reinterpret_cast<sockaddr_in*>(&out.storage);
  std::memcpy(in, found->ai_addr, sizeof(sockaddr_in));
  ::freeaddrinfo(found);
  in->sin_port = htons(a.port());
  out.length = sizeof(sockaddr_in);
  return out;
}

Address from_sockaddr(const sockaddr_storage& s, socklen_t length) {
  if (s.ss_family == AF_INET) {
    const auto* in = reinterpret_cast<const sockaddr_in*>(&s);
    char host[INET_ADDRSTRLEN] = {};
    ::inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
    return Address::tcp(host, ntohs(in->sin_port));
  }
  const auto* un = reinterpret_cast<const sockaddr_un*>(&s);
  const std::size_t offset = offsetof(sockaddr_un, sun_path);
  std::size_t n = length > offset ? length - offset : 0;
  // A path carries its NUL (or more padding); an abstract name starts with one.
  if (n > 0 && un->sun_path[0] != '\0') n = ::strnlen(un->sun_path, n);
  return Address::unix_socket(std::string(un->sun_path, n));
}

int socket_for(Family family) {
  int fd = ::socket(family == Family::inet ? AF_INET : AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) throw OSError(errno, "mpx: socket");
  return fd;
}

void set_option(int fd, int level, int name, int value, const char* doing) {
  if (::setsockopt(fd, level, name, &value, sizeof value) != 0) throw OSError(errno, doing);
}

void set_nonblocking(int fd, bool on) {
  int flags = ::fcntl(fd, F_GETFL);
  if (flags < 0 || ::fcntl(fd, F_SETFL, on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK) != 0)
    throw OSError(errno, "mpx: fcntl(O_NONBLOCK)");
}

// Waits for `events` on fd; false when the deadline passed first.
bool wait_for(int fd, short events, const Deadline& deadline, const char* doing) {
  pollfd p{fd, events, 0};
  for (;;) {
    int r = ::poll(&p, 1, deadline.poll_timeout_ms());
    if (r > 0) return true;
    if (r == 0 && deadline.expired()) return false;
    if (r < 0 && errno != EINTR) throw OSError(errno, doing);
  }
}

// The challenge both ways; `first_deliver` for the accepting side.
void authenticate(SocketConnection& c, std::string_view authkey, const Deadline& deadline, bool first_deliver) {
  if (authkey.empty()) return;
  auto step = [&](bool deliver) {
    auto left = deadline.remaining();
    if (deliver) {
      if (left) deliver_challenge(c, authkey, SocketConnection::Timeout(*left));
      else deliver_challenge(c, authkey);
    } else {
      if (left) answer_challenge(c, authkey, SocketConnection::Timeout(*left));
      else answer_challenge(c, authkey);
    }
  };
  step(first_deliver);
  step(!first_deliver);
}

std::string temp_path() {
  static std::atomic<unsigned> counter{0};
  const char* dir = std::getenv("TMPDIR");
  unsigned char r[6] = {};
  if (::getrandom(r, sizeof r, 0) != sizeof r) throw OSError(errno, "mpx::Listener: getrandom");
  std::string name = std::string(dir && *dir ? dir : "/tmp") + "/mpx-listener-" + std::to_string(::getpid()) + "-" +
                     std::to_string(counter.fetch_add(1)) + "-";
  static const char* hex = "0123456789abcdef";
  for (unsigned char c : r) {
    name += hex[c >> 4];
    name += hex[c & 15];
  }
  return name;
}

}  // namespace

// ---------------------------------------------------------------- Address

Address Address::unix_socket(std::string path) {
  Address a;
  a.family_ = Family::unix_socket;
  a.path_ = std::move(path);
  return a;
}

// (Strings are built by append: g++ 12 at -O3 warns falsely (-Wrestrict) on `std::string + std::string`.)
Address Address::abstract(std::string_view name) {
  std::string path(1, '\0');
  path.append(name);
  return unix_socket(std::move(path));
}

Address Address::tcp(std::string host, std::uint16_t port) {
  Address a;
  a.family_ = Family::inet;
  a.host_ = std::move(host);
  a.port_ = port;
  return a;
}

std::string Address::to_string() const {
  std::string text;
  if (family_ == Family::inet) {
    text.append(host_).append(":").append(std::to_string(port_));
  } else if (is_abstract()) {
    text.append("@").append(path_, 1, std::string::npos);
  } else {
    text = path_;
  }
  return text;
}

// ---------------------------------------------------------------- Listener

Listener::Listener(Family family, std::string authkey, int backlog)
    : Listener(family == Family::inet ? Address::tcp("127.0.0.1", 0) : Address::unix_socket(temp_path()),
               std::move(authkey), backlog) {}

Listener::Listener(const Address& address, std::string authkey, int backlog) : authkey_(std::move(authkey)) {
  const SockAddr sa = to_sockaddr(address);
  UniqueFd fd(socket_for(address.family()));
  if (address.family() == Family::inet)
    set_option(fd.get(), SOL_SOCKET, SO_REUSEADDR, 1, "mpx::Listener: setsockopt(SO_REUSEADDR)");
  if (::bind(fd.get(), sa.get(), sa.length) != 0) throw OSError(errno, "mpx::Listener: bind " + address.to_string());
  // From here on the path is ours to unlink, even if listen fails.
  address_ = address;
  owner_ = ::getpid();
  fd_ = fd.release();
  try {
    if (::listen(fd_, backlog) != 0) throw OSError(errno, "mpx::Listener: listen on " + address.to_string());
    // accept() polls with a deadline; a non-blocking socket keeps it from
    // blocking when another process took the connection between poll and accept.
    set_nonblocking(fd_, true);
    if (address.family() == Family::inet) {
      sockaddr_storage bound{};
      socklen_t len = sizeof bound;
      if (::getsockname(fd_, reinterpret_cast<sockaddr*>(&bound), &len) != 0)
        throw OSError(errno, "mpx::Listener: getsockname");
      address_ = from_sockaddr(bound, len);
    }
  } catch (...) {
    close();
    throw;
  }
}

Listener::Listener(Listener&& other) noexcept
    : fd_(std::exchange(other.fd_, -1)),
      address_(std::move(other.address_)),
      authkey_(std::move(other.authkey_)),
      last_accepted_(std::move(other.last_accepted_)),
      owner_(std::exchange(other.owner_, 0)) {}

Listener& Listener::operator=(Listener&& other) noexcept {
  if (this != &other) {
    close();
    fd_ = std::exchange(other.fd_, -1);
    address_ = std::move(other.address_);
    authkey_ = std::move(other.authkey_);
    last_accepted_ = std::move(other.last_accepted_);
    owner_ = std::exchange(other.owner_, 0);
  }
  return *this;
}

Listener::~Listener() { close(); }

void Listener::close() {
  if (fd_ < 0) return;
  ::close(std::exchange(fd_, -1));
  if (address_.family() == Family::unix_socket && !address_.is_abstract() && owner_ == ::getpid())
    ::unlink(address_.path().c_str());
}

SocketConnection Listener::accept() { return *accept_until(Deadline::never()); }

std::optional<SocketConnection> Listener::accept(Timeout timeout) { return accept_until(Deadline::after(timeout)); }

std::optional<SocketConnection> Listener::accept_until(const Deadline& deadline) {
  if (fd_ < 0) throw ConnectionError("mpx::Listener: the listener is closed");
  for (;;) {
    sockaddr_storage peer{};
    socklen_t len = sizeof peer;
    int fd = ::accept4(fd_, reinterpret_cast<sockaddr*>(&peer), &len, SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED) continue;
      if (errno != EAGAIN && errno != EWOULDBLOCK) throw OSError(errno, "mpx::Listener: accept");
      if (!wait_for(fd_, POLLIN, deadline, "mpx::Listener: poll for a client")) return std::nullopt;
      continue;
    }
    auto c = SocketConnection::adopt(fd);
    if (address_.family() == Family::inet)
      set_option(fd, IPPROTO_TCP, TCP_NODELAY, 1, "mpx::Listener: setsockopt(TCP_NODELAY)");
    last_accepted_ = from_sockaddr(peer, len);
    try {
      authenticate(c, authkey_, deadline, true);
    } catch (const TimeoutError&) {
      if (deadline.is_never()) throw;  // cannot happen: untimed calls do not time out
      return std::nullopt;  // the client did not finish in time: drop it
    }
    return c;
  }
}

// ---------------------------------------------------------------- Client

namespace {

SocketConnection connect_until(const Address& address, std::string_view authkey, const Deadline& deadline) {
  const SockAddr sa = to_sockaddr(address);
  UniqueFd fd(socket_for(address.family()));
  const std::string doing = "mpx::Client: connect to " + address.to_string();
  auto timed_out = [&] { return TimeoutError("mpx::TimeoutError: " + doing + " timed out"); };
  if (address.family() == Family::inet) {
    // Non-blocking connect, then wait for it to complete within the deadline.
    set_nonblocking(fd.get(), true);
    if (::connect(fd.get(), sa.get(), sa.length) != 0) {
      if (errno != EINPROGRESS && errno != EINTR) throw OSError(errno, doing);
      if (!wait_for(fd.get(), POLLOUT, deadline, doing.c_str())) throw timed_out();
      int err = 0;
      socklen_t len = sizeof err;
      if (::getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &err, &len) != 0) throw OSError(errno, doing);
      if (err != 0) throw OSError(err, doing);
    }
    set_nonblocking(fd.get(), false);
    set_option(fd.get(), IPPROTO_TCP, TCP_NODELAY, 1, "mpx::Client: setsockopt(TCP_NODELAY)");
  } else {
    // A Unix connect waits only while the listener's backlog is full; the
    // send timeout bounds that wait (poll cannot).
    if (auto left = deadline.remaining()) {
      auto us = std::max<long long>(std::chrono::duration_cast<std::chrono::microseconds>(*left).count(), 1);
      timeval tv{static_cast<time_t>(us / 1'000'000), static_cast<suseconds_t>(us % 1'000'000)};
      if (::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0) throw OSError(errno, doing);
    }
    for (;;) {
      if (::connect(fd.get(), sa.get(), sa.length) == 0) break;
      if (errno == EINTR && !deadline.expired()) continue;
      if (errno == EAGAIN || errno == EINPROGRESS || errno == EINTR) throw timed_out();
      throw OSError(errno, doing);
    }
    timeval none{};
    if (::setsockopt(fd.get(), SOL_SOCKET, SO_SNDTIMEO, &none, sizeof none) != 0) throw OSError(errno, doing);
  }
  auto c = SocketConnection::adopt(fd.release());
  authenticate(c, authkey, deadline, false);
  return c;
}

}  // namespace

SocketConnection Client(const Address& address, std::string_view authkey) {
  return connect_until(address, authkey, Deadline::never());
}

SocketConnection Client(const Address& address, std::string_view authkey, SocketConnection::Timeout timeout) {
  return connect_until(address, authkey, Deadline::after(timeout));
}

}  // namespace mpx
