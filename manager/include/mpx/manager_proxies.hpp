// mpx/manager_proxies.hpp: the proxies a Manager hands out (mpx/manager.hpp).
//
//     auto d = manager.dict<std::string, int>();
//     d.set("haha", 88);  int v = d.get("haha");        // KeyError when absent
//     auto l = manager.list<int>();  l.append(20);  l.snapshot();  // std::vector<int>{20}
//
// Contract
// - A proxy is a cheap handle: an object id and a shared reference to its
//   manager's address and key. Copies name the same server-side object. Any
//   thread of any process may use it: each thread (and each forked child)
//   opens its own connection to the server on first use. Proxies are
//   serializable (address, key, the client's TLS settings, object id), so
//   they travel as arguments of a forkserver or spawned child, which connects
//   as the parent does; note that this carries the authkey and the TLS key's
//   passphrase (the key itself stays a file name).
// - Every operation is one request, atomic on the server (the object's own
//   mutex). Compound operations that Python users get wrong with two calls
//   are one call here: setdefault, pop, update, apply (a registered update
//   function, mpx/manager_registry.hpp).
// - Blocking calls (acquire, wait, put, get, join) block on the server; each
//   has a timed variant. A zero or negative timeout never waits (Python's
//   rule, as everywhere in mpx).
// - Errors: KeyError / IndexError for a missing key or index; Empty / Full
//   for queues; OwnerDeadError when a lock's previous holder died holding it
//   (the caller then holds the lock, as with mpx::Lock); BrokenBarrierError;
//   SyncError for misuse (release of an unheld lock); RemoteError for an
//   exception of registered code, with its type and message; ManagerGoneError
//   when the server is gone (StaleProxyError when a new server answers at the
//   address). A default-constructed proxy throws ManagerError.
// - Values and keys are any type mpx::encode handles; a key is compared by
//   its encoded bytes (equal values must encode equally: avoid unordered
//   containers inside keys).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "mpx/barrier.hpp"  // BrokenBarrierError
#include "mpx/detail/manager_protocol.hpp"
#include "mpx/lock.hpp"
#include "mpx/manager_error.hpp"
#include "mpx/manager_registry.hpp"
#include "mpx/queue.hpp"  // Empty, Full, QueueError
#include "mpx/serialization.hpp"

namespace mpx {

class Manager;

namespace detail::manager {

using Timeout = std::chrono::duration<double>;

inline std::int64_t to_ns(Timeout t) {
  if (t.count() <= 0) return 0;
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t).count();
}

class ProxyBase {
 public:
  ProxyBase() = default;
  ProxyBase(std::shared_ptr<const Endpoint> endpoint, std::uint64_t id) : ep_(std::move(endpoint)), id_(id) {}

  [[nodiscard]] std::uint64_t id() const noexcept { return id_; }
  // The manager's address: "@name" (local) or "host:port".
  [[nodiscard]] std::string address() const { return ep_ ? ep_->address : std::string(); }
  explicit operator bool() const noexcept { return static_cast<bool>(ep_); }

  template <class A>
  void save(A& a) const {
    if (!ep_) throw ManagerError("mpx::Manager: a default-constructed proxy cannot be serialized");
    a(ep_->address, ep_->authkey, ep_->instance, ep_->tls, id_);
  }
  template <class A>
  void load(A& a) {
    std::string address, authkey;
    std::uint64_t instance = 0;
    ManagerTlsOptions tls;
    a(address, authkey, instance, tls, id_);
    ep_ = std::make_shared<const Endpoint>(std::move(address), std::move(authkey), instance, std::move(tls));
  }

 protected:
  Response request(Op op, std::vector<Bytes> args = {}, std::int64_t timeout_ns = -1, std::string name = {}) const {
    if (!ep_) throw ManagerError("mpx::Manager: the proxy is not bound to a manager (default-constructed)");
    Request r;
    r.op = static_cast<std::uint32_t>(op);
    r.id = id_;
    r.timeout_ns = timeout_ns;
    r.name = std::move(name);
    r.args = std::move(args);
    return call(*ep_, r);
  }
  template <class T>
  T request_as(Op op, std::vector<Bytes> args = {}, std::int64_t timeout_ns = -1, std::string name = {}) const {
    return decode<T>(request(op, std::move(args), timeout_ns, std::move(name)).value);
  }

 private:
  std::shared_ptr<const Endpoint> ep_;
  std::uint64_t id_ = 0;
};

// acquire/release over the server's lock object (Lock, RLock, Condition).
template <class Derived>
class LockProxyBase : public ProxyBase {
 public:
  using ProxyBase::ProxyBase;
  // Throws OwnerDeadError (with the lock held by the caller) when the previous
  // holder died holding it; acquire_status reports that as a status instead.
  bool acquire() { return status_to_bool(acquire_status(std::nullopt)); }
  bool acquire(Timeout timeout) { return status_to_bool(acquire_status(timeout)); }
  bool try_acquire() { return acquire(Timeout::zero()); }
  LockStatus acquire_status(std::optional<Timeout> timeout = std::nullopt) {
    auto r = request(Op::acquire, {}, timeout ? to_ns(*timeout) : -1);
    switch (static_cast<Code>(r.code)) {
      case Code::timed_out: return LockStatus::timed_out;
      case Code::owner_died: dead_owner_ = static_cast<pid_t>(decode<std::int64_t>(r.value)); return LockStatus::owner_died;
      default: return LockStatus::acquired;
    }
  }
  void release() { request(Op::release); }
  // Lockable / TimedLockable.
  void lock() { acquire(); }
  bool try_lock() { return try_acquire(); }
  template <class Rep, class Period>
  bool try_lock_for(std::chrono::duration<Rep, Period> d) {
    return acquire(std::chrono::duration_cast<Timeout>(d));
  }
  void unlock() { release(); }

 private:
  bool status_to_bool(LockStatus s) {
    if (s == LockStatus::owner_died) {
      throw OwnerDeadError(std::string("mpx::Manager: ") + Derived::kind_name +
                               ": the previous holder (pid " + std::to_string(dead_owner_) +
                               ") died holding it; the lock is now held by the caller",
                           dead_owner_);
    }
    return s == LockStatus::acquired;
  }
  pid_t dead_owner_ = 0;
};

}  // namespace detail::manager

template <class K, class V>
class DictProxy : public detail::manager::ProxyBase {
  using Op = detail::manager::Op;

 public:
  using ProxyBase::ProxyBase;
  [[nodiscard]] V get(const K& key) const { return request_as<V>(Op::d_get, {encode(key)}); }
  [[nodiscard]] std::optional<V> find(const K& key) const {
    auto r = request(Op::d_get_opt, {encode(key)});
    if (r.value.empty()) return std::nullopt;
    return decode<V>(r.value);
  }
  [[nodiscard]] V get(const K& key, const V& fallback) const { return find(key).value_or(fallback); }
  void set(const K& key, const V& value) { request(Op::d_set, {encode(key), encode(value)}); }
  [[nodiscard]] bool contains(const K& key) const { return request_as<bool>(Op::d_contains, {encode(key)}); }
  // True when the key was there.
  bool erase(const K& key) { return request_as<bool>(Op::d_erase, {encode(key)}); }
  [[nodiscard]] std::size_t size() const { return request_as<std::uint64_t>(Op::d_size); }
  // Snapshots, in insertion order (as Python's dict).
  [[nodiscard]] std::vector<K> keys() const { return decode_all<K>(Op::d_keys); }
  [[nodiscard]] std::vector<V> values() const { return decode_all<V>(Op::d_values); }
  [[nodiscard]] std::vector<std::pair<K, V>> items() const {
    auto raw = request_as<std::vector<Bytes>>(Op::d_items);
    std::vector<std::pair<K, V>> out;
    out.reserve(raw.size() / 2);
    for (std::size_t i = 0; i + 1 < raw.size(); i += 2) out.emplace_back(decode<K>(raw[i]), decode<V>(raw[i + 1]));
    return out;
  }
  // The value at key; inserts `value` first when absent.
  V setdefault(const K& key, const V& value) { return request_as<V>(Op::d_setdefault, {encode(key), encode(value)}); }
  // Removes and returns; KeyError when absent (or `fallback`).
  V pop(const K& key) { return request_as<V>(Op::d_pop, {encode(key)}); }
  V pop(const K& key, const V& fallback) { return request_as<V>(Op::d_pop, {encode(key), encode(fallback)}); }
  void update(const std::vector<std::pair<K, V>>& entries) {
    std::vector<Bytes> args;
    args.reserve(entries.size() * 2);
    for (auto& [k, v] : entries) {
      args.push_back(encode(k));
      args.push_back(encode(v));
    }
    request(Op::d_update, std::move(args));
  }
  // d[key] = fn(current or nullopt, argument), atomically on the server, with
  // the function registered as `function` (register_manager_function<V, A>).
  template <class A>
  V apply(const std::string& function, const K& key, const A& argument) {
    return request_as<V>(Op::d_apply, {encode(key), encode(static_cast<const A&>(argument))}, -1, function);
  }
  void clear() { request(Op::d_clear); }

 private:
  template <class T>
  std::vector<T> decode_all(Op op) const {
    auto raw = request_as<std::vector<Bytes>>(op);
    std::vector<T> out;
    out.reserve(raw.size());
    for (auto& b : raw) out.push_back(decode<T>(b));
    return out;
  }
};

template <class T>
class ListProxy : public detail::manager::ProxyBase {
  using Op = detail::manager::Op;

 public:
  using ProxyBase::ProxyBase;
  void append(const T& value) { request(Op::l_append, {encode(value)}); }
  void extend(const std::vector<T>& values) {
    std::vector<Bytes> args;
    for (auto& v : values) args.push_back(encode(v));
    request(Op::l_extend, std::move(args));
  }
  // Negative indexes count from the end; IndexError when out of range.
  [[nodiscard]] T get(std::int64_t i) const { return request_as<T>(Op::l_get, {encode(i)}); }
  void set(std::int64_t i, const T& value) { request(Op::l_set, {encode(i), encode(value)}); }
  T pop(std::int64_t i = -1) { return request_as<T>(Op::l_pop, {encode(i)}); }
  [[nodiscard]] std::size_t size() const { return request_as<std::uint64_t>(Op::l_size); }
  [[nodiscard]] std::vector<T> snapshot() const {
    auto raw = request_as<std::vector<Bytes>>(Op::l_snapshot);
    std::vector<T> out;
    out.reserve(raw.size());
    for (auto& b : raw) out.push_back(decode<T>(b));
    return out;
  }
  void clear() { request(Op::l_clear); }
};

// Array(typecode, ...) of Python's manager: a fixed-size sequence.
template <class T>
class ArrayProxy : public detail::manager::ProxyBase {
  using Op = detail::manager::Op;

 public:
  using ProxyBase::ProxyBase;
  [[nodiscard]] T get(std::int64_t i) const { return request_as<T>(Op::l_get, {encode(i)}); }
  void set(std::int64_t i, const T& value) { request(Op::l_set, {encode(i), encode(value)}); }
  [[nodiscard]] std::size_t size() const { return request_as<std::uint64_t>(Op::l_size); }
  [[nodiscard]] std::vector<T> snapshot() const {
    auto raw = request_as<std::vector<Bytes>>(Op::l_snapshot);
    std::vector<T> out;
    for (auto& b : raw) out.push_back(decode<T>(b));
    return out;
  }
};

template <class T>
class ValueProxy : public detail::manager::ProxyBase {
  using Op = detail::manager::Op;

 public:
  using ProxyBase::ProxyBase;
  [[nodiscard]] T get() const { return request_as<T>(Op::v_get); }
  void set(const T& value) { request(Op::v_set, {encode(value)}); }
  // value = fn(value, argument) atomically on the server; returns the new value.
  template <class A>
  T apply(const std::string& function, const A& argument) {
    return request_as<T>(Op::v_apply, {encode(static_cast<const A&>(argument))}, -1, function);
  }
};

class NamespaceProxy : public detail::manager::ProxyBase {
  using Op = detail::manager::Op;

 public:
  using ProxyBase::ProxyBase;
  // RemoteError of type "AttributeError" when absent.
  template <class T>
  [[nodiscard]] T get(const std::string& name) const {
    return request_as<T>(Op::n_get, {}, -1, name);
  }
  template <class T>
  void set(const std::string& name, const T& value) {
    request(Op::n_set, {encode(value)}, -1, name);
  }
  [[nodiscard]] bool has(const std::string& name) const { return request_as<bool>(Op::n_has, {}, -1, name); }
  bool erase(const std::string& name) { return request_as<bool>(Op::n_erase, {}, -1, name); }
  [[nodiscard]] std::vector<std::string> names() const { return request_as<std::vector<std::string>>(Op::n_names); }
};

class LockProxy : public detail::manager::LockProxyBase<LockProxy> {
 public:
  using LockProxyBase::LockProxyBase;
  static constexpr const char* kind_name = "Lock";
};

class RLockProxy : public detail::manager::LockProxyBase<RLockProxy> {
 public:
  using LockProxyBase::LockProxyBase;
  static constexpr const char* kind_name = "RLock";
};

class SemaphoreProxy : public detail::manager::ProxyBase {
  using Op = detail::manager::Op;
  using Timeout = detail::manager::Timeout;

 public:
  using ProxyBase::ProxyBase;
  bool acquire() { return request_as<bool>(Op::acquire); }
  bool acquire(Timeout timeout) { return request_as<bool>(Op::acquire, {}, detail::manager::to_ns(timeout)); }
  // SyncError when a BoundedSemaphore would go over its initial value.
  void release(std::int64_t n = 1) { request(Op::release, {encode(n)}); }
  [[nodiscard]] std::int64_t get_value() const { return request_as<std::int64_t>(Op::sem_value); }
};

class EventProxy : public detail::manager::ProxyBase {
  using Op = detail::manager::Op;
  using Timeout = detail::manager::Timeout;

 public:
  using ProxyBase::ProxyBase;
  void set() { request(Op::e_set); }
  void clear() { request(Op::e_clear); }
  [[nodiscard]] bool is_set() const { return request_as<bool>(Op::e_is_set); }
  bool wait() { return request_as<bool>(Op::e_wait); }
  // False when the timeout passed with the event clear.
  bool wait(Timeout timeout) { return request_as<bool>(Op::e_wait, {}, detail::manager::to_ns(timeout)); }
};

// A condition variable over its own recursive lock (Python's default).
class ConditionProxy : public detail::manager::LockProxyBase<ConditionProxy> {
  using Op = detail::manager::Op;
  using Timeout = detail::manager::Timeout;

 public:
  using LockProxyBase::LockProxyBase;
  static constexpr const char* kind_name = "Condition";
  // Releases the lock, waits for a notify, re-acquires. False on timeout.
  bool wait() { return request_as<bool>(Op::c_wait); }
  bool wait(Timeout timeout) { return request_as<bool>(Op::c_wait, {}, detail::manager::to_ns(timeout)); }
  // Waits until pred() (evaluated here, with the lock held) or the timeout; returns pred().
  template <class Pred>
  bool wait_for(Pred pred, Timeout timeout) {
    const auto until = std::chrono::steady_clock::now() + std::chrono::duration_cast<std::chrono::nanoseconds>(timeout);
    while (!pred()) {
      const auto left = std::chrono::duration<double>(until - std::chrono::steady_clock::now());
      if (left.count() <= 0) return pred();
      wait(left);
    }
    return true;
  }
  void notify(std::int64_t n = 1) { request(Op::c_notify, {encode(n)}); }
  void notify_all() { request(Op::c_notify, {encode(std::int64_t{-1})}); }
};

class BarrierProxy : public detail::manager::ProxyBase {
  using Op = detail::manager::Op;
  using Timeout = detail::manager::Timeout;

 public:
  using ProxyBase::ProxyBase;
  // The arrival index (0 .. parties-1). BrokenBarrierError when the barrier
  // is or becomes broken (abort, reset, a timed-out or dead party).
  std::int64_t wait() { return request_as<std::int64_t>(Op::b_wait); }
  // A timeout breaks the barrier, as Python's.
  std::int64_t wait(Timeout timeout) { return request_as<std::int64_t>(Op::b_wait, {}, detail::manager::to_ns(timeout)); }
  void abort() { request(Op::b_abort); }
  void reset() { request(Op::b_reset); }
  [[nodiscard]] std::int64_t parties() const { return request_as<std::int64_t>(Op::b_parties); }
  [[nodiscard]] std::int64_t n_waiting() const { return request_as<std::int64_t>(Op::b_n_waiting); }
  [[nodiscard]] bool broken() const { return request_as<bool>(Op::b_broken); }
};

template <class T>
class QueueProxy : public detail::manager::ProxyBase {
 protected:
  using Op = detail::manager::Op;
  using Timeout = detail::manager::Timeout;

 public:
  QueueProxy() = default;
  // maxsize only serves full(); a proxy from Manager::lookup does not know it (0).
  QueueProxy(std::shared_ptr<const detail::manager::Endpoint> ep, std::uint64_t id, std::uint64_t maxsize = 0)
      : ProxyBase(std::move(ep), id), maxsize_(maxsize) {}
  void put(const T& value) { request(Op::q_put, {encode(value)}); }
  // Full when no room came within the timeout.
  void put(const T& value, Timeout timeout) { request(Op::q_put, {encode(value)}, detail::manager::to_ns(timeout)); }
  void put_nowait(const T& value) { request(Op::q_put, {encode(value)}, 0); }
  T get() { return request_as<T>(Op::q_get); }
  // Empty when nothing came within the timeout.
  T get(Timeout timeout) { return request_as<T>(Op::q_get, {}, detail::manager::to_ns(timeout)); }
  T get_nowait() { return request_as<T>(Op::q_get, {}, 0); }
  [[nodiscard]] std::size_t qsize() const { return request_as<std::uint64_t>(Op::q_size); }
  [[nodiscard]] bool empty() const { return qsize() == 0; }
  [[nodiscard]] bool full() const { return maxsize_ > 0 && qsize() >= maxsize_; }
  [[nodiscard]] std::uint64_t maxsize() const noexcept { return maxsize_; }

  template <class A>
  void save(A& a) const {
    ProxyBase::save(a);
    a(maxsize_);
  }
  template <class A>
  void load(A& a) {
    ProxyBase::load(a);
    a(maxsize_);
  }

 private:
  std::uint64_t maxsize_ = 0;
};

template <class T>
class JoinableQueueProxy : public QueueProxy<T> {
  using Op = detail::manager::Op;
  using Timeout = detail::manager::Timeout;

 public:
  using QueueProxy<T>::QueueProxy;
  // QueueError when called more often than items were put.
  void task_done() { this->request(Op::q_task_done); }
  void join() { this->request(Op::q_join); }
  // False when tasks were still unfinished at the timeout.
  bool join(Timeout timeout) { return this->template request_as<bool>(Op::q_join, {}, detail::manager::to_ns(timeout)); }
};

// An object of a type registered with ManagerType<T> (BaseManager.register).
class ObjectProxy : public detail::manager::ProxyBase {
 public:
  using ProxyBase::ProxyBase;
  // Calls the exposed method `method` with `args` (sent as std::tuple of their
  // wire types); R is its result type (void for none).
  template <class R = void, class... Args>
  R call(const std::string& method, const Args&... args) {
    using Tuple = std::tuple<detail::manager::wire_t<Args>...>;
    auto r = request(detail::manager::Op::call, {encode(Tuple(args...))}, -1, method);
    if constexpr (!std::is_void_v<R>) return decode<R>(r.value);
  }
};

}  // namespace mpx
