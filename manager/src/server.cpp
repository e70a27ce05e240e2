// The manager's server: a thread per client connection; every object has
// its own mutex, so each operation is atomic; blocking operations wait on
// the object's condition variable in slices and give up when their client
// is gone (a dead client never keeps a server thread, nor a lock, forever).
#include "server.hpp"

#include <poll.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <list>
#include <map>
#include <mutex>
#include <random>
#include <set>
#include <string_view>
#include <thread>
#include <unordered_map>

#include "channel.hpp"
#include "mpx/detail/demangle.hpp"
#include "mpx/detail/fd_passing.hpp"
#include "mpx/detail/unique_fd.hpp"
#include "mpx/logging.hpp"
#include "mpx/manager_registry.hpp"
#include "transport.hpp"

namespace mpx::detail::manager {

namespace {

// The request's client went away while its request waited.
struct ClientGone {};

// How long a freshly accepted client has for the TLS handshake and the
// challenge together, and then again to say hello.
constexpr std::chrono::seconds kHelloTimeout{5};
// How long a connection thread spins for the next request before sleeping.
constexpr std::chrono::microseconds kServerSpin{50};

// True when the client of `fd` is gone. A TCP client sends nothing while it
// waits for an answer, so readable means end of file (or a protocol breach).
bool client_gone(int fd) {
  pollfd p{fd, POLLIN | POLLRDHUP, 0};
  if (::poll(&p, 1, 0) <= 0) return false;
  if (p.revents & (POLLHUP | POLLERR | POLLRDHUP)) return true;
  char c;
  const auto n = ::recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  return n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR);
}

struct Object;

struct Ctx {
  std::uint64_t conn = 0;  // the connection's id: the owner of what it acquires
  pid_t pid = 0;           // the client's pid (for reports)
  int fd = -1;
  Deadline deadline = Deadline::never();
  std::shared_ptr<Object> self;
  std::set<std::shared_ptr<Object>>* held = nullptr;  // objects to tell when this client goes
};

Response ok(Bytes value = {}) { return Response{static_cast<std::uint32_t>(Code::ok), std::move(value), {}, {}}; }
Response fail(Code code, std::string message, std::string type = {}) {
  return Response{static_cast<std::uint32_t>(code), {}, std::move(type), std::move(message)};
}
Response bad(const char* what) { return fail(Code::bad_request, std::string("mpx::Manager: ") + what); }

std::string_view view(const Bytes& b) { return {reinterpret_cast<const char*>(b.data()), b.size()}; }

template <class T>
T arg(const Request& r, std::size_t i) {
  if (i >= r.args.size()) throw DecodeError(DecodeError::Kind::truncated, "mpx::Manager: a request lacks an argument");
  return decode<T>(r.args[i]);
}
const Bytes& raw(const Request& r, std::size_t i) {
  if (i >= r.args.size()) throw DecodeError(DecodeError::Kind::truncated, "mpx::Manager: a request lacks an argument");
  return r.args[i];
}

struct Object {
  std::mutex mutex;
  std::condition_variable cv;
  virtual ~Object() = default;
  // Called with the mutex held.
  virtual Response handle(Op op, const Request& r, Ctx& ctx, std::unique_lock<std::mutex>& lock) = 0;
  // Called when connection `conn` ends (its process died or closed it).
  virtual void disconnected(std::uint64_t, pid_t) {}

  // Waits until pred() holds: false when the request's deadline passed first.
  // Throws ClientGone when the waiting client's connection ended.
  // A client found gone after waiting gets nothing, even if pred() now holds:
  // an item taken for a dead client would be lost.
  template <class Pred>
  bool wait(std::unique_lock<std::mutex>& lock, Ctx& ctx, Pred pred) {
    bool waited = false;
    while (!pred()) {
      if (ctx.deadline.expired()) return false;
      auto left = ctx.deadline.remaining();
      auto slice = std::chrono::nanoseconds(kLivenessTick);
      if (left && *left < slice) slice = *left;
      cv.wait_for(lock, slice);
      waited = true;
      if (client_gone(ctx.fd)) throw ClientGone{};
    }
    if (waited && client_gone(ctx.fd)) throw ClientGone{};
    return true;
  }
};

// Insertion-ordered, as Python's dict.
struct DictObject : Object {
  std::list<std::pair<Bytes, Bytes>> entries;
  std::unordered_map<std::string_view, std::list<std::pair<Bytes, Bytes>>::iterator> index;

  Bytes* find(const Bytes& key) {
    auto it = index.find(view(key));
    return it == index.end() ? nullptr : &it->second->second;
  }
  void set(const Bytes& key, Bytes value) {
    if (auto* v = find(key)) {
      *v = std::move(value);
      return;
    }
    entries.emplace_back(key, std::move(value));
    auto it = std::prev(entries.end());
    index.emplace(view(it->first), it);
  }
  bool erase(const Bytes& key, Bytes* out) {
    auto it = index.find(view(key));
    if (it == index.end()) return false;
    auto e = it->second;
    index.erase(it);
    if (out) *out = std::move(e->second);
    entries.erase(e);
    return true;
  }

  Response handle(Op op, const Request& r, Ctx&, std::unique_lock<std::mutex>&) override {
    switch (op) {
      case Op::d_get:
        if (auto* v = find(raw(r, 0))) return ok(*v);
        return fail(Code::key_error, "the key is not in the dict");
      case Op::d_get_opt:
        if (auto* v = find(raw(r, 0))) return ok(*v);
        return ok();
      case Op::d_set:
        set(raw(r, 0), raw(r, 1));
        return ok();
      case Op::d_contains: return ok(encode(find(raw(r, 0)) != nullptr));
      case Op::d_erase: return ok(encode(erase(raw(r, 0), nullptr)));
      case Op::d_size: return ok(encode(static_cast<std::uint64_t>(entries.size())));
      case Op::d_keys:
      case Op::d_values:
      case Op::d_items: {
        std::vector<Bytes> out;
        out.reserve(entries.size() * (op == Op::d_items ? 2 : 1));
        for (auto& [k, v] : entries) {
          if (op != Op::d_values) out.push_back(k);
          if (op != Op::d_keys) out.push_back(v);
        }
        return ok(encode(out));
      }
      case Op::d_setdefault: {
        if (auto* v = find(raw(r, 0))) return ok(*v);
        set(raw(r, 0), raw(r, 1));
        return ok(raw(r, 1));
      }
      case Op::d_pop: {
        Bytes out;
        if (erase(raw(r, 0), &out)) return ok(std::move(out));
        if (r.args.size() > 1) return ok(raw(r, 1));
        return fail(Code::key_error, "the key is not in the dict");
      }
      case Op::d_update:
        if (r.args.size() % 2) return bad("update needs key, value pairs");
        for (std::size_t i = 0; i < r.args.size(); i += 2) set(r.args[i], r.args[i + 1]);
        return ok();
      case Op::d_apply: {
        auto fn = find_update(r.name);
        if (!fn) return fail(Code::remote, "no function named '" + r.name + "' is registered", "mpx::ManagerError");
        Bytes v = (*fn)(find(raw(r, 0)), raw(r, 1));
        set(raw(r, 0), v);
        return ok(std::move(v));
      }
      case Op::d_clear:
        index.clear();
        entries.clear();
        return ok();
      default: return bad("not a dict operation");
    }
  }
};

// list (growable) and Array (fixed size).
struct ListObject : Object {
  std::vector<Bytes> items;
  bool fixed = false;

  std::optional<std::size_t> at(std::int64_t i) const {
    const auto n = static_cast<std::int64_t>(items.size());
    if (i < 0) i += n;
    if (i < 0 || i >= n) return std::nullopt;
    return static_cast<std::size_t>(i);
  }
  Response handle(Op op, const Request& r, Ctx&, std::unique_lock<std::mutex>&) override {
    if (fixed && (op == Op::l_append || op == Op::l_extend || op == Op::l_pop || op == Op::l_clear)) {
      return bad("an Array has a fixed size");
    }
    switch (op) {
      case Op::l_append: items.push_back(raw(r, 0)); return ok();
      case Op::l_extend: items.insert(items.end(), r.args.begin(), r.args.end()); return ok();
      case Op::l_get: {
        auto i = at(arg<std::int64_t>(r, 0));
        if (!i) return fail(Code::index_error, "index out of range");
        return ok(items[*i]);
      }
      case Op::l_set: {
        auto i = at(arg<std::int64_t>(r, 0));
        if (!i) return fail(Code::index_error, "assignment index out of range");
        items[*i] = raw(r, 1);
        return ok();
      }
      case Op::l_pop: {
        auto i = at(r.args.empty() ? -1 : arg<std::int64_t>(r, 0));
        if (!i) return fail(Code::index_error, items.empty() ? "pop from empty list" : "pop index out of range");
        Bytes v = std::move(items[*i]);
        items.erase(items.begin() + static_cast<std::ptrdiff_t>(*i));
        return ok(std::move(v));
      }
      case Op::l_size: return ok(encode(static_cast<std::uint64_t>(items.size())));
      case Op::l_snapshot: return ok(encode(items));
      case Op::l_clear: items.clear(); return ok();
      default: return bad("not a list operation");
    }
  }
};

struct NamespaceObject : Object {
  std::map<std::string, Bytes> attributes;
  Response handle(Op op, const Request& r, Ctx&, std::unique_lock<std::mutex>&) override {
    switch (op) {
      case Op::n_get: {
        auto it = attributes.find(r.name);
        if (it == attributes.end()) return fail(Code::remote, "Namespace has no attribute '" + r.name + "'", "AttributeError");
        return ok(it->second);
      }
      case Op::n_set: attributes[r.name] = raw(r, 0); return ok();
      case Op::n_has: return ok(encode(attributes.count(r.name) != 0));
      case Op::n_erase: return ok(encode(attributes.erase(r.name) != 0));
      case Op::n_names: {
        std::vector<std::string> names;
        for (auto& [k, v] : attributes) names.push_back(k);
        return ok(encode(names));
      }
      default: return bad("not a Namespace operation");
    }
  }
};

struct ValueObject : Object {
  Bytes value;
  Response handle(Op op, const Request& r, Ctx&, std::unique_lock<std::mutex>&) override {
    switch (op) {
      case Op::v_get: return ok(value);
      case Op::v_set: value = raw(r, 0); return ok();
      case Op::v_apply: {
        auto fn = find_update(r.name);
        if (!fn) return fail(Code::remote, "no function named '" + r.name + "' is registered", "mpx::ManagerError");
        value = (*fn)(&value, raw(r, 0));
        return ok(value);
      }
      default: return bad("not a Value operation");
    }
  }
};

// Lock and RLock; also the lock part of a Condition. The owner is a
// connection (one per thread and process); a connection that ends holding
// the lock frees it, and the next acquirer is told (Code::owner_died).
struct LockObject : Object {
  bool recursive = false;
  std::uint64_t owner = 0;
  std::uint64_t count = 0;
  pid_t dead_owner = 0;  // set when an owner died holding it; reported once

  Response acquire(Ctx& ctx, std::unique_lock<std::mutex>& lock) {
    if (recursive && owner == ctx.conn) {
      ++count;
      return ok(encode(true));
    }
    if (!wait(lock, ctx, [&] { return owner == 0; })) {
      return Response{static_cast<std::uint32_t>(Code::timed_out), encode(false), {}, {}};
    }
    owner = ctx.conn;
    count = 1;
    ctx.held->insert(ctx.self);
    if (dead_owner) {
      auto pid = std::exchange(dead_owner, 0);
      return Response{static_cast<std::uint32_t>(Code::owner_died), encode(static_cast<std::int64_t>(pid)), {}, {}};
    }
    return ok(encode(true));
  }
  Response release(Ctx& ctx) {
    if (owner == 0) return fail(Code::sync_error, recursive ? "mpx::RLock: release of an unowned lock" : "mpx::Lock: release of an unlocked lock");
    if (recursive && owner != ctx.conn) return fail(Code::sync_error, "mpx::RLock: release by a thread that does not own it");
    if (--count == 0 || !recursive) {
      owner = 0;
      count = 0;
      cv.notify_all();
    }
    return ok();
  }
  Response handle(Op op, const Request&, Ctx& ctx, std::unique_lock<std::mutex>& lock) override {
    switch (op) {
      case Op::acquire: return acquire(ctx, lock);
      case Op::release: return release(ctx);
      default: return bad("not a lock operation");
    }
  }
  void disconnected(std::uint64_t conn, pid_t pid) override {
    std::lock_guard g(mutex);
    if (owner != conn) return;
    owner = 0;
    count = 0;
    dead_owner = pid ? pid : 1;
    cv.notify_all();
  }
};

struct SemaphoreObject : Object {
  std::int64_t value = 1;
  std::int64_t bound = -1;  // BoundedSemaphore: the initial value
  Response handle(Op op, const Request& r, Ctx& ctx, std::unique_lock<std::mutex>& lock) override {
    switch (op) {
      case Op::acquire:
        if (!wait(lock, ctx, [&] { return value > 0; }))
          return Response{static_cast<std::uint32_t>(Code::timed_out), encode(false), {}, {}};
        --value;
        return ok(encode(true));
      case Op::release: {
        const auto n = r.args.empty() ? std::int64_t{1} : arg<std::int64_t>(r, 0);
        if (n < 1) return fail(Code::sync_error, "mpx::Semaphore: release(n) needs n >= 1");
        if (bound >= 0 && value + n > bound) return fail(Code::sync_error, "mpx::BoundedSemaphore: released too many times");
        value += n;
        cv.notify_all();
        return ok();
      }
      case Op::sem_value: return ok(encode(value));
      default: return bad("not a semaphore operation");
    }
  }
};

struct EventObject : Object {
  bool flag = false;
  Response handle(Op op, const Request&, Ctx& ctx, std::unique_lock<std::mutex>& lock) override {
    switch (op) {
      case Op::e_set: flag = true; cv.notify_all(); return ok();
      case Op::e_clear: flag = false; return ok();
      case Op::e_is_set: return ok(encode(flag));
      case Op::e_wait: return ok(encode(wait(lock, ctx, [&] { return flag; })));
      default: return bad("not an Event operation");
    }
  }
};

// A Condition over its own RLock (Python's default).
struct ConditionObject : LockObject {
  std::uint64_t next_ticket = 1;
  std::set<std::uint64_t> waiting;   // tickets not yet notified
  ConditionObject() { recursive = true; }

  Response handle(Op op, const Request& r, Ctx& ctx, std::unique_lock<std::mutex>& lock) override {
    switch (op) {
      case Op::acquire: return acquire(ctx, lock);
      case Op::release: return release(ctx);
      case Op::c_wait: {
        if (owner != ctx.conn) return fail(Code::sync_error, "mpx::Condition: wait() without holding the lock");
        const auto saved = count;
        const auto ticket = next_ticket++;
        waiting.insert(ticket);
        owner = 0;
        count = 0;
        cv.notify_all();
        bool notified;
        try {
          notified = wait(lock, ctx, [&] { return !waiting.count(ticket); });
        } catch (const ClientGone&) {
          waiting.erase(ticket);
          throw;
        }
        waiting.erase(ticket);
        // Re-acquire whatever happened, as Python's wait does.
        Ctx untimed = ctx;
        untimed.deadline = Deadline::never();
        wait(lock, untimed, [&] { return owner == 0; });
        owner = ctx.conn;
        count = saved;
        return ok(encode(notified));
      }
      case Op::c_notify: {
        if (owner != ctx.conn) return fail(Code::sync_error, "mpx::Condition: notify() without holding the lock");
        auto n = arg<std::int64_t>(r, 0);  // < 0: all
        while (!waiting.empty() && n != 0) {
          waiting.erase(waiting.begin());
          if (n > 0) --n;
        }
        cv.notify_all();
        return ok();
      }
      default: return bad("not a Condition operation");
    }
  }
};

struct BarrierObject : Object {
  std::int64_t parties = 1;
  std::int64_t count = 0;
  std::uint64_t generation = 0;
  std::uint64_t reset_generation = ~std::uint64_t{0};  // waiters of this generation were reset
  bool broken = false;
  std::multiset<int> waiters;  // the sockets of the parties waiting

  Response broken_error() { return fail(Code::broken_barrier, "mpx::Barrier: the barrier is broken"); }
  Response handle(Op op, const Request&, Ctx& ctx, std::unique_lock<std::mutex>& lock) override {
    switch (op) {
      case Op::b_wait: {
        if (broken) return broken_error();
        const auto index = count++;
        if (count == parties) {
          // A party that died waiting may not have been noticed yet: it breaks the barrier.
          for (int fd : waiters) {
            if (client_gone(fd)) {
              broken = true;
              cv.notify_all();
              return broken_error();
            }
          }
          count = 0;
          ++generation;
          cv.notify_all();
          return ok(encode(index));
        }
        const auto mine = generation;
        bool done;
        waiters.insert(ctx.fd);
        try {
          done = wait(lock, ctx, [&] { return generation != mine || broken; });
        } catch (const ClientGone&) {
          waiters.erase(waiters.find(ctx.fd));
          broken = true;  // a party died: nobody can pass any more (Python aborts too)
          cv.notify_all();
          throw;
        }
        waiters.erase(waiters.find(ctx.fd));
        if (!done) {
          broken = true;
          cv.notify_all();
          return broken_error();
        }
        if (broken || reset_generation == mine) return broken_error();
        return ok(encode(index));
      }
      case Op::b_abort: broken = true; cv.notify_all(); return ok();
      case Op::b_reset:
        if (count > 0) {
          reset_generation = generation;
          ++generation;
        }
        count = 0;
        broken = false;
        cv.notify_all();
        return ok();
      case Op::b_parties: return ok(encode(parties));
      case Op::b_n_waiting: return ok(encode(count));
      case Op::b_broken: return ok(encode(broken));
      default: return bad("not a Barrier operation");
    }
  }
};

struct QueueObject : Object {
  std::deque<Bytes> items;
  std::uint64_t maxsize = 0;  // 0: unbounded
  bool joinable = false;
  std::uint64_t unfinished = 0;

  Response handle(Op op, const Request& r, Ctx& ctx, std::unique_lock<std::mutex>& lock) override {
    switch (op) {
      case Op::q_put: {
        if (!wait(lock, ctx, [&] { return maxsize == 0 || items.size() < maxsize; })) return fail(Code::full, "");
        items.push_back(raw(r, 0));
        if (joinable) ++unfinished;
        cv.notify_all();
        return ok();
      }
      case Op::q_get: {
        if (!wait(lock, ctx, [&] { return !items.empty(); })) return fail(Code::empty, "");
        Bytes v = std::move(items.front());
        items.pop_front();
        cv.notify_all();
        return ok(std::move(v));
      }
      case Op::q_size: return ok(encode(static_cast<std::uint64_t>(items.size())));
      case Op::q_task_done:
        if (!joinable) return bad("task_done() on a Queue that is not joinable");
        if (unfinished == 0) return fail(Code::queue_error, "mpx::JoinableQueue: task_done() called too many times");
        if (--unfinished == 0) cv.notify_all();
        return ok();
      case Op::q_join:
        if (!joinable) return bad("join() on a Queue that is not joinable");
        return ok(encode(wait(lock, ctx, [&] { return unfinished == 0; })));
      default: return bad("not a Queue operation");
    }
  }
};

struct CustomObject : Object {
  std::shared_ptr<const TypeEntry> type;
  std::shared_ptr<void> instance;
  std::string type_name;
  Response handle(Op op, const Request& r, Ctx&, std::unique_lock<std::mutex>&) override {
    if (op != Op::call) return bad("not a custom object operation");
    auto it = type->methods.find(r.name);
    if (it == type->methods.end()) {
      return fail(Code::remote, "'" + type_name + "' exposes no method '" + r.name + "'", "AttributeError");
    }
    return ok(it->second(instance.get(), r.args.empty() ? std::span<const std::byte>() : raw(r, 0)));
  }
};

class Server {
 public:
  Server() : instance_(std::random_device{}() | (std::uint64_t{std::random_device{}()} << 32) | 1) {}

  std::uint64_t instance() const { return instance_; }

  Response create(const Request& r) {
    std::shared_ptr<Object> obj;
    switch (static_cast<Kind>(arg<std::uint32_t>(r, 0))) {
      case Kind::dict: {
        auto d = std::make_shared<DictObject>();
        if (r.args.size() % 2 == 0) return bad("dict needs key, value pairs");
        for (std::size_t i = 1; i + 1 < r.args.size(); i += 2) d->set(r.args[i], r.args[i + 1]);
        obj = d;
        break;
      }
      case Kind::list:
      case Kind::array: {
        auto l = std::make_shared<ListObject>();
        l->fixed = static_cast<Kind>(arg<std::uint32_t>(r, 0)) == Kind::array;
        l->items.assign(r.args.begin() + 1, r.args.end());
        obj = l;
        break;
      }
      case Kind::ns: obj = std::make_shared<NamespaceObject>(); break;
      case Kind::value: {
        auto v = std::make_shared<ValueObject>();
        v->value = raw(r, 1);
        obj = v;
        break;
      }
      case Kind::lock:
      case Kind::rlock: {
        auto l = std::make_shared<LockObject>();
        l->recursive = static_cast<Kind>(arg<std::uint32_t>(r, 0)) == Kind::rlock;
        obj = l;
        break;
      }
      case Kind::semaphore:
      case Kind::bounded_semaphore: {
        auto s = std::make_shared<SemaphoreObject>();
        s->value = arg<std::int64_t>(r, 1);
        if (s->value < 0) return bad("a semaphore's initial value must be >= 0");
        if (static_cast<Kind>(arg<std::uint32_t>(r, 0)) == Kind::bounded_semaphore) s->bound = s->value;
        obj = s;
        break;
      }
      case Kind::event: obj = std::make_shared<EventObject>(); break;
      case Kind::condition: obj = std::make_shared<ConditionObject>(); break;
      case Kind::barrier: {
        auto b = std::make_shared<BarrierObject>();
        b->parties = arg<std::int64_t>(r, 1);
        if (b->parties < 1) return bad("a Barrier needs at least one party");
        obj = b;
        break;
      }
      case Kind::queue:
      case Kind::joinable_queue: {
        auto q = std::make_shared<QueueObject>();
        const auto maxsize = arg<std::int64_t>(r, 1);
        q->maxsize = maxsize > 0 ? static_cast<std::uint64_t>(maxsize) : 0;
        q->joinable = static_cast<Kind>(arg<std::uint32_t>(r, 0)) == Kind::joinable_queue;
        obj = q;
        break;
      }
      case Kind::custom: {
        auto type = find_type(r.name);
        if (!type) return fail(Code::remote, "no type named '" + r.name + "' is registered", "mpx::ManagerError");
        if (!type->make) return fail(Code::remote, "'" + r.name + "' has no constructor registered", "mpx::ManagerError");
        auto c = std::make_shared<CustomObject>();
        c->type = type;
        c->type_name = r.name;
        c->instance = type->make(r.args.size() > 1 ? std::span<const std::byte>(raw(r, 1)) : std::span<const std::byte>());
        obj = c;
        break;
      }
      default: return bad("unknown object kind");
    }
    std::lock_guard g(mutex_);
    const auto id = next_id_++;
    objects_.emplace(id, std::move(obj));
    return ok(encode(id));
  }

  std::shared_ptr<Object> find(std::uint64_t id) {
    std::lock_guard g(mutex_);
    auto it = objects_.find(id);
    return it == objects_.end() ? nullptr : it->second;
  }

  // Answers one request. Exceptions of user code become Code::remote;
  // ClientGone propagates.
  Response handle(const Request& r, Ctx& ctx) {
    const auto op = static_cast<Op>(r.op);
    try {
      switch (op) {
        case Op::ping: return ok(encode(instance_));
        case Op::create: return create(r);
        case Op::shutdown: return ok();
        case Op::publish: {
          if (!find(r.id)) return bad("publish: no such object");
          std::lock_guard g(mutex_);
          names_[r.name] = r.id;
          return ok();
        }
        case Op::lookup: {
          std::lock_guard g(mutex_);
          auto it = names_.find(r.name);
          if (it == names_.end()) return fail(Code::key_error, "no object is published as '" + r.name + "'");
          return ok(encode(it->second));
        }
        default: break;
      }
      auto obj = find(r.id);
      if (!obj) return bad("no such object (the proxy is not of this server)");
      ctx.self = obj;
      ctx.deadline = r.timeout_ns < 0 ? Deadline::never() : Deadline::after(std::chrono::nanoseconds(r.timeout_ns));
      std::unique_lock lock(obj->mutex);
      return obj->handle(op, r, ctx, lock);
    } catch (const ClientGone&) {
      throw;
    } catch (const std::exception& e) {
      return fail(Code::remote, e.what(), current_exception_type());
    } catch (...) {
      return fail(Code::remote, "an exception that is not a std::exception", "unknown");
    }
  }

 private:
  std::uint64_t instance_;
  std::mutex mutex_;
  std::uint64_t next_id_ = 1;
  std::unordered_map<std::uint64_t, std::shared_ptr<Object>> objects_;
  std::map<std::string, std::uint64_t> names_;  // publish / lookup
};

std::atomic<std::uint64_t> next_connection{1};

pid_t peer_pid(int fd, pid_t claimed) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0 && cred.pid > 0) return cred.pid;
  return claimed;
}

SharedMapping make_channel(UniqueFd& fd) {
  fd.reset(::memfd_create("mpx-manager-channel", MFD_CLOEXEC));
  if (!fd) throw OSError(errno, "mpx::Manager: memfd_create for a client channel");
  if (::ftruncate(fd.get(), static_cast<off_t>(kChannelBytes)) != 0) {
    throw OSError(errno, "mpx::Manager: ftruncate of a client channel");
  }
  return SharedMapping::of_fd(fd.get(), kChannelBytes, "a manager channel");
}

// Serves one client until it goes, breaks the protocol, or asks for shutdown.
void serve_connection(Server& server, SocketConnection accepted, const ServedListener& served) {
  auto log = get_logger();
  const bool local_listener = served.listener.address().family() == Family::unix_socket;
  const std::string where = served.listener.address().to_string();
  Ctx ctx;
  ctx.conn = next_connection.fetch_add(1);
  ctx.fd = accepted.fileno();
  std::set<std::shared_ptr<Object>> held;
  ctx.held = &held;
  Channel channel;
  bool shutdown = false;
  bool authenticated = false;
  ctx.pid = peer_pid(ctx.fd, 0);
  Transport socket;
  try {
    const auto deadline = Deadline::after(kHelloTimeout);
    socket = served.tls ? Transport::tls_accept(std::move(accepted), *served.tls, deadline)
                        : Transport(std::move(accepted));
    socket.authenticate(served.authkey, true, deadline);
    authenticated = true;
    socket.set_max_message_size(kMaxMessage);
    auto hello = socket.recv<Hello>(Deadline::after(kHelloTimeout));
    if (!hello) {
      log->warn("mpx::Manager: a client did not say hello in time; connection closed");
      return;
    }
    ctx.pid = peer_pid(ctx.fd, static_cast<pid_t>(hello->pid));
    Welcome welcome;
    welcome.instance = server.instance();
    welcome.server_pid = ::getpid();
    UniqueFd memfd;
    if (hello->shared_memory && local_listener) {
      channel = Channel(make_channel(memfd));
      welcome.shared_memory = true;
      welcome.channel_bytes = kChannelBytes;
    }
    socket.send(welcome);
    if (memfd) {
      const std::byte byte{'F'};
      const int fd = memfd.get();
      send_with_fds(ctx.fd, std::span(&byte, 1), std::span(&fd, 1));
    }
    memfd.reset();

    Bytes in;
    Bytes out;
    while (!shutdown) {
      if (channel) {
        auto& h = channel.header();
        if (channel.wait_for(kRequest, h.server_sleeping, ctx.fd, Deadline::never(), kServerSpin) !=
            Channel::Wait::ready) {
          break;  // the client is gone
        }
        const auto n = h.length.load(std::memory_order_relaxed);
        if (n > kMaxMessage) {
          log->warn("mpx::Manager: an oversized request ({} bytes) from pid {}; connection closed", n, ctx.pid);
          break;
        }
        in.assign(channel.data(), channel.data() + n);  // copied: the client cannot change it under the decoder
      } else {
        in = socket.recv_bytes();
      }
      Request request = decode<Request>(in);
      Response response = server.handle(request, ctx);
      ctx.self.reset();
      shutdown = static_cast<Op>(request.op) == Op::shutdown;
      encode_into(out, response);
      if (out.size() > kMaxMessage) {
        encode_into(out, fail(Code::remote, "the response is over the limit of " + std::to_string(kMaxMessage) + " bytes",
                              "mpx::ManagerError"));
      }
      if (channel) {
        channel.publish(out, kResponse, channel.header().client_sleeping);
      } else {
        socket.send_bytes(std::span<const std::byte>(out.data(), out.size()));
      }
    }
  } catch (const ClientGone&) {
  } catch (const AuthenticationError& e) {
    log->warn("mpx::Manager: refused a client on {}: {}", where, e.what());
  } catch (const ManagerTlsError& e) {
    log->warn("mpx::Manager: refused a client on {}: {}", where, e.what());
  } catch (const TimeoutError& e) {
    log->warn("mpx::Manager: a client on {} did not {} in time; connection closed: {}", where,
              served.tls ? "finish the TLS handshake and the challenge" : "answer the challenge", e.what());
  } catch (const EOFError& e) {
    if (!authenticated) log->warn("mpx::Manager: a client on {} hung up before it was authenticated: {}", where, e.what());
  } catch (const DecodeError& e) {
    log->warn("mpx::Manager: a malformed request from pid {}: {}; connection closed", ctx.pid, e.what());
  } catch (const MessageLengthError& e) {
    if (!authenticated)
      log->warn("mpx::Manager: refused a client on {} (not the challenge; a TLS client to a plain server?): {}", where,
                e.what());
    else
      log->warn("mpx::Manager: an oversized request from pid {}: {}; connection closed", ctx.pid, e.what());
  } catch (const std::exception& e) {
    log->warn("mpx::Manager: connection of pid {} closed: {}", ctx.pid, e.what());
  }
  for (auto& obj : held) obj->disconnected(ctx.conn, ctx.pid);
  if (shutdown) {
    log->info("mpx::Manager: shut down by pid {}", ctx.pid);
    ::_exit(0);
  }
}

void accept_loop(Server& server, ServedListener& served) {
  auto log = get_logger();
  auto& listener = served.listener;
  for (;;) {
    pollfd p{listener.fileno(), POLLIN, 0};
    if (::poll(&p, 1, -1) <= 0) continue;
    try {
      // No key on the listener: accept returns at once, and the connection's
      // thread runs the (bounded) handshake, so a silent client stalls nobody.
      auto c = listener.accept(std::chrono::duration<double>(0));
      if (!c) continue;
      std::thread(serve_connection, std::ref(server), std::move(*c), std::cref(served)).detach();
    } catch (const std::exception& e) {
      log->warn("mpx::Manager: a client on {} failed to connect: {}", listener.address().to_string(), e.what());
    }
  }
}

}  // namespace

Response handle_request_bytes(std::span<const std::byte> bytes) {
  static std::unique_ptr<Server> server;
  static int calls = 0;
  if (!server || ++calls % 4096 == 0) server = std::make_unique<Server>();  // bounded memory
  Request r = decode<Request>(bytes);
  r.timeout_ns = 0;
  Ctx ctx;
  ctx.conn = 1;
  std::set<std::shared_ptr<Object>> held;
  ctx.held = &held;
  try {
    auto response = server->handle(r, ctx);
    for (auto& obj : held) obj->disconnected(ctx.conn, 0);
    return response;
  } catch (const ClientGone&) {
    return fail(Code::remote, "client gone");
  }
}

void serve(std::vector<ServedListener> listeners) {
  static Server server;  // lives until the process ends: connection threads use it
  std::vector<std::thread> threads;
  for (std::size_t i = 1; i < listeners.size(); ++i) threads.emplace_back(accept_loop, std::ref(server), std::ref(listeners[i]));
  accept_loop(server, listeners.at(0));
  for (;;) ::pause();  // not reached
}

}  // namespace mpx::detail::manager
