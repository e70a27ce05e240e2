// mpx/manager.hpp: Manager, as multiprocessing.Manager(): shared objects that
// live in a server process, used through proxies from any process. The
// umbrella header of the manager layer.
//
//     mpx::Manager m;                                  // starts the server
//     auto d = m.dict<std::string, int>();
//     auto l = m.list<int>();
//     mpx::Process p([&] { d.set("haha", 88); l.append(20); });
//     p.start(); p.join();
//     d.items();                                       // {("haha", 88)}
//
//     mpx::Manager served({.address = "127.0.0.1:5000", .authkey = "secret"});
//     // another program: auto m = mpx::Manager::connect("127.0.0.1:5000", "secret");
//     // TLS: .tls = {.certificate = "srv.pem", .key = "srv.key"} on the server,
//     // connect("127.0.0.1:5000", "secret", {.cafile = "ca.pem"}) on the client.
//
// Contract
// - Manager() forks a server process (a daemon child: it never outlives this
//   process) listening on a fresh abstract Unix address, with a random
//   authkey. With ManagerOptions::address = "host:port" it also listens on
//   TCP (port 0 picks one; address() reports it) with the given authkey (a
//   random one if empty). start = false defers start() to the caller.
// - shutdown() asks the server to exit, waits for it (at most 5 s, then
//   SIGKILL) and reaps it; the destructor does the same in the process that
//   started it (a forked child's copy does nothing). Afterwards every proxy
//   call throws ManagerGoneError. A Manager is move-only; start() twice, or a
//   proxy factory before start(), throws ManagerError.
// - Transport (docs/manager.md): every client first connects to a listener
//   and runs the HMAC challenge in both directions (mpx/auth.hpp); a wrong key
//   throws AuthenticationError on the client and is logged by the server. A
//   client on the local Unix address then gets a shared-memory channel (a
//   memfd passed with SCM_RIGHTS): its calls cost no socket round trip. A TCP
//   client sends the same requests over the socket. Requests and responses
//   are mpx::encode envelopes (never code); a malformed, truncated or
//   oversized (> 16 MiB) request closes that client's connection with a log
//   line, and the server goes on. The accepting thread only accepts; the
//   challenge and the hello run in the connection's thread, each within 5 s,
//   so a silent client delays nobody and is dropped.
// - TLS (ManagerTlsOptions; docs/manager.md): with ManagerOptions::tls the
//   TCP listener speaks only TLS (1.2 at least), and the challenge runs
//   inside it; the local address is unchanged. connect(address, authkey,
//   tls) verifies the server's certificate and name; a server with a cafile
//   requires a client certificate that verifies against it. A refused
//   certificate, a plaintext client to a TLS server or a TLS client to a
//   plain server throw ManagerTlsError at the client and are logged by the
//   server, which goes on; a file that cannot be loaded throws
//   ManagerTlsError naming it, from the constructor, connect or
//   serve_forever. Without TLS, frames after the challenge are neither
//   encrypted nor authenticated.
// - connect(address, authkey) reaches a manager served on TCP (or a local
//   "@name" address) from any program: a Manager that does not own the server
//   (shutdown() asks the server to exit but reaps nothing; destruction does
//   nothing). Its proxies carry the TLS settings (the file names, not the
//   files): a forked, forkserver or spawned child reconnects with them.
//   serve_forever(address, authkey[, tls]) runs a server in the calling
//   process; it returns only by ending the process (exit code 0) when a
//   client calls shutdown(), as Python's serve_forever.
// - Objects live until the server ends (there is no per-proxy reference
//   count). Server-side code is registered by name (mpx/manager_registry.hpp).
// - Faults: a client that dies releases the locks it held through the manager
//   (Lock, RLock, Condition); the next acquirer gets OwnerDeadError (or
//   LockStatus::owner_died) with the lock held; a party that dies in a
//   Barrier's wait breaks it. Its pending requests are dropped; nothing else
//   changes. When the server dies, every call (and every blocked call) throws
//   ManagerGoneError within ~50 ms. A server started again at the same
//   address is a new server (a random instance id, checked at every
//   connect): an old proxy's call that finds its connection broken throws
//   ManagerGoneError, and its later calls throw StaleProxyError (its object
//   died with the old server); proxies from a new connect() work.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "mpx/auth.hpp"  // AuthenticationError
#include "mpx/manager_error.hpp"
#include "mpx/manager_proxies.hpp"
#include "mpx/manager_registry.hpp"
#include "mpx/serialization.hpp"

namespace mpx {

// ManagerTlsOptions (TLS on the TCP transport) is in mpx/detail/manager_protocol.hpp.

struct ManagerOptions {
  std::string address;   // empty: local only; "host:port": also serve on TCP
  std::string authkey;   // empty: a random key
  bool start = true;
  ManagerTlsOptions tls = {};  // for the TCP listener; needs `address`
};

class Manager {
  using Kind = detail::manager::Kind;
  using Op = detail::manager::Op;

 public:
  Manager() : Manager(ManagerOptions{}) {}
  explicit Manager(ManagerOptions options);
  Manager(Manager&&) noexcept;
  Manager& operator=(Manager&&) noexcept;
  Manager(const Manager&) = delete;
  Manager& operator=(const Manager&) = delete;
  ~Manager();

  // Reaches a running manager ("host:port", or a local "@name") with its key.
  // Throws AuthenticationError for a wrong key, ManagerGoneError when nobody
  // answers, ManagerTlsError when TLS fails (a file that cannot be loaded, a
  // certificate refused by either side, TLS on one side only).
  [[nodiscard]] static Manager connect(const std::string& address, const std::string& authkey);
  [[nodiscard]] static Manager connect(const std::string& address, const std::string& authkey,
                                       const ManagerTlsOptions& tls);
  // Serves on `address` ("host:port"; port 0 picks one and is logged at info
  // level) in this process until a client calls shutdown(); then exits(0).
  // With `tls`, only over TLS (ManagerTlsError here for a file that cannot be loaded).
  [[noreturn]] static void serve_forever(const std::string& address, const std::string& authkey);
  [[noreturn]] static void serve_forever(const std::string& address, const std::string& authkey,
                                         const ManagerTlsOptions& tls);

  void start();
  void shutdown();
  [[nodiscard]] bool running() const noexcept { return static_cast<bool>(endpoint_); }
  // The server's pid; 0 for a connected manager or before start().
  [[nodiscard]] pid_t pid() const noexcept { return server_pid_; }
  // Where clients connect: "host:port" when serving on TCP, else the local "@name".
  [[nodiscard]] std::string address() const;
  [[nodiscard]] const std::string& authkey() const noexcept { return authkey_; }

  template <class K, class V>
  [[nodiscard]] DictProxy<K, V> dict(const std::vector<std::pair<K, V>>& initial = {}) {
    std::vector<Bytes> args;
    for (auto& [k, v] : initial) {
      args.push_back(encode(k));
      args.push_back(encode(v));
    }
    return {endpoint(), make_object(Kind::dict, std::move(args))};
  }
  template <class T>
  [[nodiscard]] ListProxy<T> list(const std::vector<T>& initial = {}) {
    return {endpoint(), make_object(Kind::list, encode_all(initial))};
  }
  template <class T>
  [[nodiscard]] ArrayProxy<T> Array(const std::vector<T>& initial) {
    return {endpoint(), make_object(Kind::array, encode_all(initial))};
  }
  template <class T>
  [[nodiscard]] ValueProxy<T> Value(const T& initial) {
    return {endpoint(), make_object(Kind::value, {encode(initial)})};
  }
  [[nodiscard]] NamespaceProxy Namespace() { return {endpoint(), make_object(Kind::ns, {})}; }
  [[nodiscard]] LockProxy Lock() { return {endpoint(), make_object(Kind::lock, {})}; }
  [[nodiscard]] RLockProxy RLock() { return {endpoint(), make_object(Kind::rlock, {})}; }
  [[nodiscard]] SemaphoreProxy Semaphore(std::int64_t value = 1) {
    return {endpoint(), make_object(Kind::semaphore, {encode(value)})};
  }
  [[nodiscard]] SemaphoreProxy BoundedSemaphore(std::int64_t value = 1) {
    return {endpoint(), make_object(Kind::bounded_semaphore, {encode(value)})};
  }
  [[nodiscard]] EventProxy Event() { return {endpoint(), make_object(Kind::event, {})}; }
  [[nodiscard]] ConditionProxy Condition() { return {endpoint(), make_object(Kind::condition, {})}; }
  [[nodiscard]] BarrierProxy Barrier(std::int64_t parties) {
    return {endpoint(), make_object(Kind::barrier, {encode(parties)})};
  }
  template <class T>
  [[nodiscard]] QueueProxy<T> Queue(std::int64_t maxsize = 0) {
    return {endpoint(), make_object(Kind::queue, {encode(maxsize)}), maxsize > 0 ? std::uint64_t(maxsize) : 0};
  }
  template <class T>
  [[nodiscard]] JoinableQueueProxy<T> JoinableQueue(std::int64_t maxsize = 0) {
    return {endpoint(), make_object(Kind::joinable_queue, {encode(maxsize)}), maxsize > 0 ? std::uint64_t(maxsize) : 0};
  }
  // Names an object of this manager so that other programs can find it
  // (Python's register("get_list", callable=lambda: the_list)). Publishing a
  // name again replaces it.
  void publish(const std::string& name, const detail::manager::ProxyBase& proxy);
  // The proxy published as `name` (KeyError when none is). The caller names
  // the proxy type; a proxy of the wrong kind gets ManagerError on use.
  template <class Proxy>
  [[nodiscard]] Proxy lookup(const std::string& name) {
    return Proxy(endpoint(), lookup_id(name));
  }
  // A new object of the type registered as `type` (ManagerType<T>), built
  // with the constructor registered for these argument types.
  template <class... Args>
  [[nodiscard]] ObjectProxy create(const std::string& type, const Args&... args) {
    using Tuple = std::tuple<detail::manager::wire_t<Args>...>;
    return {endpoint(), make_object(Kind::custom, {encode(Tuple(args...))}, type)};
  }

 private:
  template <class T>
  static std::vector<Bytes> encode_all(const std::vector<T>& values) {
    std::vector<Bytes> out;
    out.reserve(values.size());
    for (auto& v : values) out.push_back(encode(v));
    return out;
  }
  const std::shared_ptr<const detail::manager::Endpoint>& endpoint() const;
  std::uint64_t make_object(Kind kind, std::vector<Bytes> args, std::string name = {});
  std::uint64_t lookup_id(const std::string& name);

  struct Server;
  std::unique_ptr<Server> server_;  // the owned server process, if any
  std::shared_ptr<const detail::manager::Endpoint> endpoint_;
  std::string local_address_;
  std::string tcp_address_;
  std::string authkey_;
  ManagerTlsOptions tls_;  // the TCP listener's, until start()
  pid_t server_pid_ = 0;
  pid_t owner_pid_ = 0;
  bool pending_start_ = false;
};

}  // namespace mpx
