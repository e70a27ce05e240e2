// mpx/detail/manager_protocol.hpp: the manager's one request/response
// protocol, the same on both channels (shared memory for local clients, a
// socket for TCP clients). Every message is mpx::encode's checked envelope
// of a Request or a Response: data, never code. Keys and values travel (and
// live on the server) as the encoded bytes of their own type, so the server
// needs no knowledge of the user's types.
#pragma once

#include <compare>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "mpx/serialization.hpp"

namespace mpx {

// TLS on the manager's TCP transport (OpenSSL; TLS 1.2 at least, 1.3
// preferred); the names mirror NodeOptions' tls_* (mpx/actors/node.hpp). All
// empty: plain TCP. Defined here because every proxy's Endpoint carries the
// client's (mpx/manager.hpp is where users meet it).
// - Server (ManagerOptions::tls, serve_forever): certificate and key are
//   required; with cafile every client must present a certificate that
//   verifies against it (mutual TLS), else clients present none.
// - Client (connect): the server's certificate must verify against cafile
//   (the system's CA store when cafile is empty) and name the host of the
//   address, or server_name when set (an IP is checked as an IP). certificate
//   and key are this client's own, for a server that requires one.
// - Files are named, not loaded: a process that uses a proxy loads them
//   itself (a forkserver or spawned child, too), so relative paths resolve
//   against that process' working directory.
struct ManagerTlsOptions {
  // (= {}: a designated initializer may name only the fields it sets, warning-free)
  std::string certificate = {};  // PEM file: the certificate (chain, leaf first)
  std::string key = {};          // PEM file: its private key
  std::string cafile = {};       // PEM file: the CA certificates the peer is checked against
  std::string passphrase = {};   // of an encrypted key
  std::string server_name = {};  // client: the DNS name or IP the server's certificate must carry
  [[nodiscard]] bool enabled() const noexcept { return !certificate.empty() || !key.empty() || !cafile.empty(); }
  auto operator<=>(const ManagerTlsOptions&) const = default;
  template <class A>
  void serialize(A& a) {
    a(certificate, key, cafile, passphrase, server_name);
  }
};

}  // namespace mpx

namespace mpx::detail::manager {

inline constexpr std::uint32_t kProtocolVersion = 1;
// The largest request or response (envelope included) either side accepts.
inline constexpr std::size_t kMaxMessage = std::size_t{16} << 20;

enum class Op : std::uint32_t {
  // manager
  create = 1, shutdown, ping, publish, lookup,
  // dict
  d_get, d_get_opt, d_set, d_contains, d_erase, d_size, d_keys, d_values, d_items, d_setdefault, d_pop, d_update,
  d_apply, d_clear,
  // list and array
  l_append, l_get, l_set, l_size, l_extend, l_pop, l_snapshot, l_clear,
  // namespace
  n_get, n_set, n_has, n_erase, n_names,
  // value
  v_get, v_set, v_apply,
  // lock, rlock, semaphore, condition (its lock)
  acquire, release, sem_value,
  // event
  e_set, e_clear, e_is_set, e_wait,
  // condition
  c_wait, c_notify,
  // barrier
  b_wait, b_abort, b_reset, b_parties, b_n_waiting, b_broken,
  // queue
  q_put, q_get, q_size, q_task_done, q_join,
  // custom object
  call,
};

// Object kinds for Op::create (Request::name carries a custom type's name).
enum class Kind : std::uint32_t {
  dict = 1, list, array, ns, value, lock, rlock, semaphore, bounded_semaphore, event, condition, barrier, queue,
  joinable_queue, custom
};

enum class Code : std::uint32_t {
  ok = 0,
  remote,          // an exception on the server: type and message
  key_error,
  index_error,
  empty,           // Queue.get ran out
  full,            // Queue.put ran out
  timed_out,       // a timed acquire/wait ran out (value holds false)
  owner_died,      // acquired; the previous holder died holding it
  broken_barrier,
  sync_error,      // misuse: release of an unheld lock, over-release
  queue_error,     // task_done() called more often than put()
  bad_request,     // the request made no sense for the object
};

struct Request {
  std::uint32_t op = 0;
  std::uint64_t id = 0;
  std::int64_t timeout_ns = -1;  // < 0: block; 0: do not wait
  std::string name;
  std::vector<Bytes> args;
  template <class A>
  void serialize(A& a) {
    a(op, id, timeout_ns, name, args);
  }
};

struct Response {
  std::uint32_t code = 0;
  Bytes value;
  std::string type;
  std::string message;
  template <class A>
  void serialize(A& a) {
    a(code, value, type, message);
  }
};

// The first message a client sends after the challenge.
struct Hello {
  std::uint32_t version = kProtocolVersion;
  bool shared_memory = false;  // a local client asks for a shared-memory channel
  std::int64_t pid = 0;
  template <class A>
  void serialize(A& a) {
    a(version, shared_memory, pid);
  }
};

// The server's answer; with shared_memory, the channel's memfd follows (SCM_RIGHTS).
struct Welcome {
  std::uint32_t version = kProtocolVersion;
  std::uint64_t instance = 0;  // random per server start
  std::int64_t server_pid = 0;
  bool shared_memory = false;
  std::uint64_t channel_bytes = 0;
  template <class A>
  void serialize(A& a) {
    a(version, instance, server_pid, shared_memory, channel_bytes);
  }
};

// Where a manager is and how to reach it; shared by all proxies of a Manager
// and serialized with them, TLS settings included (a forkserver or spawned
// child rebuilds it and connects exactly as the parent does).
struct Endpoint {
  std::string address;      // "@name" (local, abstract Unix) or "host:port"
  std::string authkey;
  std::uint64_t instance = 0;
  ManagerTlsOptions tls;     // the client's; not enabled: plain (always for a local address)
  std::uint64_t serial = 0;  // this process' cache key for connections (not serialized)
  Endpoint();
  Endpoint(std::string address_, std::string authkey_, std::uint64_t instance_, ManagerTlsOptions tls_ = {});
  ~Endpoint();
  Endpoint(const Endpoint&) = delete;
  Endpoint& operator=(const Endpoint&) = delete;
  [[nodiscard]] bool local() const { return !address.empty() && address[0] == '@'; }
};

// One round trip on this thread's connection to the endpoint (opened on first
// use, and again in a forked child). Returns responses with Code ok,
// timed_out and owner_died; throws the typed error of every other code
// (throw_remote), ManagerGoneError when the server is unreachable, and
// StaleProxyError when another server answers at the address.
Response call(const Endpoint& endpoint, const Request& request);
[[noreturn]] void throw_remote(const Response& response);

}  // namespace mpx::detail::manager
