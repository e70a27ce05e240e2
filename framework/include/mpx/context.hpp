// mpx/context.hpp: contexts, as multiprocessing.get_context(method).
//
//     auto ctx = mpx::get_context(mpx::StartMethod::forkserver);  // or get_context("forkserver")
//     mpx::Process p = ctx.Process(registered_fn, 42);   // started with forkserver
//     auto q = ctx.Queue<int>();                          // an mpx::Queue<int>
//     ctx.get_start_method();                             // StartMethod::forkserver
//
// Contract
// - A Context carries a start method: every Process made through it starts
//   with that method, whatever set_start_method() says (unless the
//   ProcessOptions given name one themselves). get_context() without a method
//   is Python's default context: it follows set_start_method() at each
//   start(), and its get_start_method() is the current default.
// - The other factories (Queue, Lock, Pipe, Value, ...) make the same objects
//   as the classes themselves: in mpx they work alike under every start
//   method. They exist so that code written against a context reads as
//   Python's.
// - A context never starts anything by itself: the fork server of a
//   forkserver context is started by the first start() that needs it.
// - Errors: an unknown name throws ProcessError (mpx has fork, forkserver
//   and spawn, see get_all_start_methods()).
// - A spawn context needs mpx::freeze_support() at the top of main (see
//   mpx/process.hpp).
// - Contexts are small values; copy them freely, across threads too.
#pragma once

#include <cstddef>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

#include "mpx/barrier.hpp"
#include "mpx/condition.hpp"
#include "mpx/event.hpp"
#include "mpx/lock.hpp"
#include "mpx/pipe.hpp"
#include "mpx/process.hpp"
#include "mpx/queue.hpp"
#include "mpx/semaphore.hpp"
#include "mpx/sharedctypes.hpp"

namespace mpx {

class Context {
 public:
  // Python's DefaultContext: follows set_start_method().
  Context() = default;
  explicit Context(StartMethod method) : method_(method) {}

  // The context's method; for the default context, get_start_method().
  [[nodiscard]] StartMethod get_start_method() const { return method_ ? *method_ : mpx::get_start_method(); }
  // Whether this context fixes its method (false for get_context()).
  [[nodiscard]] bool has_fixed_method() const noexcept { return method_.has_value(); }

  // A Process (not started) that starts with this context's method.
  template <class F, class... Args>
    requires std::is_invocable_v<std::decay_t<F>&, std::decay_t<Args>&...>
  [[nodiscard]] mpx::Process Process(F&& target, Args&&... args) const {
    return mpx::Process(options({}), std::forward<F>(target), std::forward<Args>(args)...);
  }
  // As above; a start method named in `given` wins over the context's.
  template <class F, class... Args>
    requires std::is_invocable_v<std::decay_t<F>&, std::decay_t<Args>&...>
  [[nodiscard]] mpx::Process Process(ProcessOptions given, F&& target, Args&&... args) const {
    return mpx::Process(options(std::move(given)), std::forward<F>(target), std::forward<Args>(args)...);
  }
  // The options a Process subclass should be built with to use this context.
  [[nodiscard]] ProcessOptions options(ProcessOptions given = {}) const {
    if (!given.start_method && method_) given.start_method = *method_;
    return given;
  }

  template <class T, class... A>
  [[nodiscard]] mpx::Queue<T> Queue(A&&... a) const { return mpx::Queue<T>(std::forward<A>(a)...); }
  template <class T, class... A>
  [[nodiscard]] mpx::SimpleQueue<T> SimpleQueue(A&&... a) const { return mpx::SimpleQueue<T>(std::forward<A>(a)...); }
  template <class T, class... A>
  [[nodiscard]] mpx::JoinableQueue<T> JoinableQueue(A&&... a) const {
    return mpx::JoinableQueue<T>(std::forward<A>(a)...);
  }
  [[nodiscard]] std::pair<Connection, Connection> Pipe(bool duplex = true) const { return mpx::Pipe(duplex); }
  [[nodiscard]] mpx::Lock Lock() const { return mpx::Lock(); }
  [[nodiscard]] mpx::RLock RLock() const { return mpx::RLock(); }
  template <class... A>
  [[nodiscard]] mpx::Semaphore Semaphore(A&&... a) const { return mpx::Semaphore(std::forward<A>(a)...); }
  template <class... A>
  [[nodiscard]] mpx::BoundedSemaphore BoundedSemaphore(A&&... a) const {
    return mpx::BoundedSemaphore(std::forward<A>(a)...);
  }
  template <class... A>
  [[nodiscard]] mpx::Condition Condition(A&&... a) const { return mpx::Condition(std::forward<A>(a)...); }
  [[nodiscard]] mpx::Event Event() const { return mpx::Event(); }
  template <class... A>
  [[nodiscard]] mpx::Barrier Barrier(A&&... a) const { return mpx::Barrier(std::forward<A>(a)...); }
  template <class T, class... A>
  [[nodiscard]] mpx::Value<T> Value(A&&... a) const { return mpx::Value<T>(std::forward<A>(a)...); }
  template <class T, class... A>
  [[nodiscard]] mpx::Array<T> Array(A&&... a) const { return mpx::Array<T>(std::forward<A>(a)...); }
  template <class T, class... A>
  [[nodiscard]] mpx::RawValue<T> RawValue(A&&... a) const { return mpx::RawValue<T>(std::forward<A>(a)...); }
  template <class T, class... A>
  [[nodiscard]] mpx::RawArray<T> RawArray(A&&... a) const { return mpx::RawArray<T>(std::forward<A>(a)...); }

 private:
  std::optional<StartMethod> method_;
};

// Python's get_context(None): the default context.
[[nodiscard]] inline Context get_context() { return Context(); }
[[nodiscard]] inline Context get_context(StartMethod method) { return Context(method); }
// "fork", "forkserver" or "spawn"; ProcessError for any other name.
[[nodiscard]] Context get_context(std::string_view method);
// The start methods mpx offers, the default first: {fork, forkserver, spawn}.
[[nodiscard]] std::vector<StartMethod> get_all_start_methods();
// "fork" / "forkserver" / "spawn", as Python spells them.
[[nodiscard]] std::string_view to_string(StartMethod method) noexcept;

}  // namespace mpx
