// mpx/manager_registry.hpp: code that runs inside the manager's server,
// registered by name (BaseManager.register, and atomic read-modify-write).
//
//     // an update function: new value from the current one (empty if the key is absent)
//     mpx::register_manager_function<int, int>("add", [](std::optional<int> v, int n) { return v.value_or(0) + n; });
//     d.apply("add", "hits", 1);            // d["hits"] += 1, atomically on the server
//
//     struct Counter { int n = 0; int add(int k) { return n += k; } };
//     mpx::ManagerType<Counter>("Counter").constructor<int>().method("add", &Counter::add);
//     auto c = manager.create("Counter", 5);   // lives in the server
//     int v = c.call<int>("add", 2);          // 7
//
// Contract
// - Register before the Manager starts (at namespace scope, or early in
//   main): the server is forked from this process and knows what was
//   registered at that moment. A standalone server (Manager::serve_forever)
//   knows what its own program registered. Registering a function name again
//   replaces it; a type's constructor and methods are added to its entry (a
//   method or constructor registered again replaces the old one).
//   Registration is thread-safe.
// - Only registered code runs on the server; the wire carries names and
//   serialized values, never code. Arguments and results are encoded with
//   mpx::encode: a proxy must pass arguments of the exact parameter types
//   (after decay; a string literal is sent as std::string), else the server
//   answers a RemoteError naming the DecodeError.
// - An exception thrown by registered code reaches the caller as
//   RemoteError with its (demangled) type and message; the server goes on.
// - A custom object's methods run one at a time (the object has a mutex on the
//   server); they must not block for long: other clients of that object wait.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <tuple>
#include <type_traits>
#include <unordered_map>

#include "mpx/serialization.hpp"

namespace mpx {

namespace detail::manager {

// current: the stored encoded value, or nullptr when absent. Returns the new encoded value.
using UpdateFn = std::function<Bytes(const Bytes* current, std::span<const std::byte> arg)>;
void register_update(const std::string& name, UpdateFn fn);
[[nodiscard]] std::shared_ptr<const UpdateFn> find_update(const std::string& name);

using Method = std::function<Bytes(void* self, std::span<const std::byte> args)>;
struct TypeEntry {
  std::function<std::shared_ptr<void>(std::span<const std::byte> args)> make;
  std::unordered_map<std::string, Method> methods;
};
// Runs `edit` on the entry of `name` (created empty) under the registry's lock.
void edit_type(const std::string& name, const std::function<void(TypeEntry&)>& edit);
[[nodiscard]] std::shared_ptr<const TypeEntry> find_type(const std::string& name);

// The type an argument travels as: string literals and char pointers as std::string.
template <class T>
using wire_t = std::conditional_t<std::is_convertible_v<const std::decay_t<T>&, const char*>, std::string,
                                  std::decay_t<T>>;

template <class R, class F, class Tuple>
Bytes invoke_encoded(F&& f, Tuple& args) {
  if constexpr (std::is_void_v<R>) {
    std::apply(std::forward<F>(f), args);
    return {};
  } else {
    return encode(std::apply(std::forward<F>(f), args));
  }
}

}  // namespace detail::manager

// Registers fn(std::optional<V> current, A argument) -> V under `name`.
template <class V, class A, class F>
void register_manager_function(const std::string& name, F fn) {
  detail::manager::register_update(
      name, [fn = std::move(fn)](const Bytes* current, std::span<const std::byte> arg) -> Bytes {
        std::optional<V> v;
        if (current) v = decode<V>(*current);
        return encode(static_cast<V>(fn(std::move(v), decode<A>(arg))));
      });
}

// A user class that lives in the server, as BaseManager.register(name, T).
template <class T>
class ManagerType {
 public:
  explicit ManagerType(std::string name) : name_(std::move(name)) {
    if constexpr (std::is_default_constructible_v<T>) constructor<>();
  }
  // The constructor the server calls for Manager::create(name, A...).
  template <class... A>
  ManagerType& constructor() {
    detail::manager::edit_type(name_, [](detail::manager::TypeEntry& e) {
      e.make = [](std::span<const std::byte> bytes) -> std::shared_ptr<void> {
        auto args = decode<std::tuple<std::decay_t<A>...>>(bytes);
        return std::apply([](auto&... a) { return std::make_shared<T>(a...); }, args);
      };
    });
    return *this;
  }
  template <class R, class... A>
  ManagerType& method(const std::string& name, R (T::*m)(A...)) {
    return add<R, A...>(name, [m](T& self, auto&... a) -> R { return (self.*m)(a...); });
  }
  template <class R, class... A>
  ManagerType& method(const std::string& name, R (T::*m)(A...) const) {
    return add<R, A...>(name, [m](T& self, auto&... a) -> R { return (self.*m)(a...); });
  }

 private:
  template <class R, class... A, class F>
  ManagerType& add(const std::string& name, F f) {
    detail::manager::edit_type(name_, [&](detail::manager::TypeEntry& e) {
      e.methods[name] = [f](void* self, std::span<const std::byte> bytes) -> Bytes {
        auto args = decode<std::tuple<std::decay_t<A>...>>(bytes);
        auto call = [&](auto&... a) -> R { return f(*static_cast<T*>(self), a...); };
        return detail::manager::invoke_encoded<R>(call, args);
      };
    });
    return *this;
  }
  std::string name_;
};

}  // namespace mpx
