// The client side of the manager protocol: one connection per thread and
// process to each manager (opened lazily, again after fork), and call().
#include <sys/mman.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <optional>
#include <span>
#include <unordered_map>

#include "channel.hpp"
#include "mpx/barrier.hpp"
#include "mpx/detail/fd_passing.hpp"
#include "mpx/detail/identity.hpp"
#include "mpx/detail/unique_fd.hpp"
#include "mpx/listener.hpp"
#include "mpx/manager_error.hpp"
#include "mpx/queue.hpp"
#include "mpx/sync_error.hpp"
#include "manager_address.hpp"
#include "transport.hpp"

namespace mpx::detail::manager {

namespace {

std::atomic<std::uint64_t> next_serial{1};
// How long opening a connection (connect, challenge, hello) may take.
constexpr std::chrono::seconds kConnectTimeout{10};
// The client spins this long for a response before it sleeps: a dict
// operation takes a few microseconds on the server.
constexpr std::chrono::microseconds kClientSpin{30};

struct ClientConnection {
  pid_t pid = 0;
  Transport socket;
  Channel channel;
};

// Per thread: endpoint serial -> this thread's connection to it.
thread_local std::unordered_map<std::uint64_t, std::unique_ptr<ClientConnection>> connections;

[[noreturn]] void gone(const Endpoint& ep, const std::string& why) {
  throw ManagerGoneError("mpx::Manager: the manager at " + ep.address + " is gone (" + why + ")");
}

std::unique_ptr<ClientConnection> open(const Endpoint& ep) {
  auto c = std::make_unique<ClientConnection>();
  c->pid = ::getpid();
  const auto deadline = Deadline::after(kConnectTimeout);
  Welcome welcome;
  // Outside the try: a file that cannot be loaded is this client's error, named as such.
  const auto tls = ep.local() || !ep.tls.enabled() ? nullptr : client_context(ep.tls);
  bool authenticated = false;
  try {
    const Address address = parse_address(ep.address);
    // Connect only: the challenge runs on the transport (inside TLS when on).
    auto socket = Client(address, {}, std::chrono::duration<double>(*deadline.remaining()));
    c->socket = tls ? Transport::tls_connect(std::move(socket), *tls, address.host(), deadline)
                    : Transport(std::move(socket));
    c->socket.authenticate(ep.authkey, false, deadline);
    authenticated = true;
    c->socket.set_max_message_size(kMaxMessage);
    c->socket.send(Hello{kProtocolVersion, ep.local(), ::getpid()}, deadline);
    auto w = c->socket.recv<Welcome>(deadline);
    if (!w) gone(ep, "no answer to the hello");
    welcome = *w;
  } catch (const AuthenticationError&) {
    throw;
  } catch (const ManagerTlsError& e) {
    // In TLS 1.3 a server's refusal of our certificate arrives at our first read.
    throw ManagerTlsError("mpx::Manager: TLS with the manager at " + ep.address + " failed: " + e.what());
  } catch (const ManagerError&) {
    throw;  // ManagerGoneError, a malformed address
  } catch (const EOFError& e) {
    // Hung up on before the challenge passed: a TLS server refusing a plain
    // client (or our certificate), or a plain server refusing TLS.
    if (!authenticated && !ep.local()) {
      throw ManagerTlsError("mpx::Manager: the manager at " + ep.address + " hung up during " +
                            (tls ? "the TLS handshake or the challenge (did it refuse our certificate, or "
                                   "not speak TLS?)"
                                 : "the challenge (a TLS server refuses a plain client: connect with "
                                   "ManagerTlsOptions)") +
                            ": " + e.what());
    }
    gone(ep, e.what());
  } catch (const Error& e) {
    gone(ep, e.what());
  }
  if (welcome.version != kProtocolVersion) gone(ep, "it speaks protocol version " + std::to_string(welcome.version));
  if (ep.instance != 0 && welcome.instance != ep.instance) {
    throw StaleProxyError("mpx::Manager: the manager at " + ep.address +
                          " was restarted; this proxy names an object of the previous server, which is gone");
  }
  if (welcome.shared_memory) {
    // One byte with the channel's memfd.
    std::byte byte{};
    std::vector<UniqueFd> fds;
    std::optional<std::size_t> n;
    try {
      n = receive_with_fds(c->socket.fileno(), std::span(&byte, 1), fds, 1, deadline);
    } catch (const OSError& e) {
      gone(ep, std::string("the shared-memory channel did not arrive: ") + e.what());
    }
    if (n != 1 || fds.size() != 1 || welcome.channel_bytes != kChannelBytes)
      gone(ep, "the shared-memory channel did not arrive");
    c->channel = Channel(SharedMapping::of_fd(fds[0].get(), kChannelBytes, "a manager channel"));
  }
  return c;
}

}  // namespace

Endpoint::Endpoint() : serial(next_serial.fetch_add(1)) {}
Endpoint::Endpoint(std::string address_, std::string authkey_, std::uint64_t instance_, ManagerTlsOptions tls_)
    : address(std::move(address_)),
      authkey(std::move(authkey_)),
      instance(instance_),
      tls(std::move(tls_)),
      serial(next_serial.fetch_add(1)) {}
// The connections of other threads stay until those threads end.
Endpoint::~Endpoint() { connections.erase(serial); }

std::uint64_t connect_instance(const Endpoint& ep) {
  Request ping;
  ping.op = static_cast<std::uint32_t>(Op::ping);
  auto r = call(ep, ping);
  return decode<std::uint64_t>(r.value);
}

Response call(const Endpoint& ep, const Request& request) {
  auto& slot = connections[ep.serial];
  if (slot && slot->pid != ::getpid()) {
    // Inherited through fork: the parent's connection is not ours to use.
    slot.reset();
  }
  if (!slot) slot = open(ep);
  thread_local Bytes out;
  encode_into(out, request);
  if (out.size() > kMaxMessage) {
    throw ManagerError("mpx::Manager: a request of " + std::to_string(out.size()) + " bytes is over the limit of " +
                       std::to_string(kMaxMessage));
  }
  thread_local Bytes in;
  if (slot->channel) {
    auto& ch = slot->channel;
    ch.publish(out, kRequest, ch.header().server_sleeping);
    auto w = ch.wait_for(kResponse, ch.header().client_sleeping, slot->socket.fileno(), Deadline::never(), kClientSpin);
    if (w != Channel::Wait::ready) {
      slot.reset();
      gone(ep, "the server process ended");
    }
    const auto n = ch.header().length.load(std::memory_order_relaxed);
    if (n > kMaxMessage) {
      slot.reset();
      gone(ep, "it sent a malformed response");
    }
    in.assign(ch.data(), ch.data() + n);
    ch.header().state.store(kIdle, std::memory_order_relaxed);
  } else {
    try {
      slot->socket.send_bytes(std::span<const std::byte>(out.data(), out.size()));
      in = slot->socket.recv_bytes();
    } catch (const Error& e) {
      slot.reset();
      gone(ep, e.what());
    }
  }
  Response r;
  try {
    r = decode<Response>(in);
  } catch (const DecodeError& e) {
    slot.reset();
    gone(ep, std::string("it sent a malformed response: ") + e.what());
  }
  switch (static_cast<Code>(r.code)) {
    case Code::ok:
    case Code::timed_out:
    case Code::owner_died:
      return r;
    default:
      throw_remote(r);
  }
}

void throw_remote(const Response& r) {
  switch (static_cast<Code>(r.code)) {
    case Code::key_error: throw KeyError(r.message);
    case Code::index_error: throw IndexError(r.message);
    case Code::empty: throw Empty();
    case Code::full: throw Full();
    case Code::broken_barrier: throw BrokenBarrierError(r.message);
    case Code::sync_error: throw SyncError(r.message);
    case Code::queue_error: throw QueueError(r.message);
    case Code::bad_request: throw ManagerError(r.message);
    default: throw RemoteError(r.type, r.message);
  }
}

}  // namespace mpx::detail::manager
