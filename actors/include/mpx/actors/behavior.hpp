// mpx/actors/behavior.hpp: what an actor does with each message type.
//
//     mpx::actors::Behavior adder(mpx::actors::Context& self) {
//       return {
//           [](const Add& m) { return m.a + m.b; },          // returning a value replies
//           [&self](const Log& m) { self.stop(); },           // returning nothing: no reply
//           [&self](const Slow& m) {                          // replying later
//             auto promise = self.make_response_promise<int>();
//             ...; return promise;                            // promise.deliver(42) from a continuation
//           },
//       };
//     }
//
// Contract
// - A Behavior is a set of handlers, one per message type (the parameter
//   type, taken by value or const reference; the first handler for a type
//   wins). Message types are anything mpx::encode/decode handle.
// - A handler's return value is the reply to a request (and ignored for a
//   plain send). void replies with an empty acknowledgement (request<void>).
//   Returning a ResponsePromise<R> defers the reply to promise.deliver().
// - An exception escaping a handler stops the actor (reason "exception:
//   <type>: <message>") after a requester got it as RemoteError.
// - Handlers of one actor run one at a time, in the order the messages were
//   queued; different actors run in parallel on the host's CAF threads.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <span>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

#include "mpx/actors/detail/value.hpp"
#include "mpx/actors/errors.hpp"
#include "mpx/serialization.hpp"

namespace mpx::actors {

namespace detail {
struct ReplyTarget;
// Sends `reply` (an empty Value: the void acknowledgement) to the requester.
void deliver_reply(const std::shared_ptr<ReplyTarget>& target, const Value& reply);
void deliver_error(const std::shared_ptr<ReplyTarget>& target, const std::string& kind, const std::string& type,
                   const std::string& message);
}  // namespace detail

// A reply promised by a handler and delivered later (CAF's response_promise).
template <class R>
class ResponsePromise {
 public:
  ResponsePromise() = default;
  explicit ResponsePromise(std::shared_ptr<detail::ReplyTarget> target) : target_(std::move(target)) {}

  // Sends the reply; only the first deliver counts. A no-op when the message
  // was a plain send.
  template <class V = R>
    requires(!std::is_void_v<V>)
  void deliver(const V& value) {
    if (auto target = std::exchange(target_, nullptr)) detail::deliver_reply(target, detail::borrow_value<R>(value));
  }
  void deliver()
    requires std::is_void_v<R>
  {
    if (auto target = std::exchange(target_, nullptr)) detail::deliver_reply(target, detail::Value{});
  }
  // Fails the request with a RemoteError of this type and message.
  void deliver_error(const std::string& type, const std::string& message) {
    if (auto target = std::exchange(target_, nullptr)) detail::deliver_error(target, "remote", type, message);
  }
  [[nodiscard]] bool pending() const noexcept { return target_ != nullptr; }

 private:
  std::shared_ptr<detail::ReplyTarget> target_;
};

namespace detail {

template <class T>
struct IsResponsePromise : std::false_type {};
template <class R>
struct IsResponsePromise<ResponsePromise<R>> : std::true_type {};

template <class F>
struct HandlerTraits : HandlerTraits<decltype(&F::operator())> {};
template <class C, class R, class A>
struct HandlerTraits<R (C::*)(A) const> {
  using Result = R;
  using Message = std::remove_cvref_t<A>;
};
template <class C, class R, class A>
struct HandlerTraits<R (C::*)(A)> {
  using Result = R;
  using Message = std::remove_cvref_t<A>;
};
template <class R, class A>
struct HandlerTraits<R (*)(A)> {
  using Result = R;
  using Message = std::remove_cvref_t<A>;
};

// What a handler gave back.
struct Outcome {
  Value reply;            // owned; empty for void
  bool deferred = false;  // a ResponsePromise: the reply comes later
};

// Thrown (not a std::exception, so a handler's own catch clauses never see
// it) when a message from another process cannot be decoded as the
// handler's type.
struct DecodeFailure {
  std::string what;
};

struct Handler {
  std::uint64_t tag;
  std::string_view type_name;
  // Decodes a message from another process and runs the handler on it
  // (throws DecodeFailure for bytes that are not a valid message).
  std::function<Outcome(std::span<const std::byte>)> call_bytes;
  // Runs the handler on a message object.
  std::function<Outcome(const void*)> call;
};

template <class F>
Handler make_handler(F f) {
  using Traits = HandlerTraits<std::decay_t<F>>;
  using M = typename Traits::Message;
  using R = typename Traits::Result;
  auto fn = std::make_shared<std::decay_t<F>>(std::move(f));
  auto call = [fn](const M& message) -> Outcome {
    if constexpr (std::is_void_v<R>) {
      (*fn)(message);
      return {};
    } else if constexpr (IsResponsePromise<std::remove_cvref_t<R>>::value) {
      (void)(*fn)(message);
      return Outcome{{}, true};
    } else {
      return Outcome{own_value<std::remove_cvref_t<R>>((*fn)(message)), false};
    }
  };
  return Handler{mpx::type_tag<M>(), mpx::type_name<M>(),
                 [call](std::span<const std::byte> bytes) -> Outcome {
                   std::optional<M> message;
                   try {
                     message.emplace(mpx::decode<M>(bytes));
                   } catch (const mpx::Error& e) {
                     throw DecodeFailure{e.what()};
                   }
                   return call(*message);
                 },
                 [call](const void* object) { return call(*static_cast<const M*>(object)); }};
}

}  // namespace detail

class Behavior {
 public:
  Behavior() = default;
  template <class... Fs>
    requires(sizeof...(Fs) > 0 && (!std::is_same_v<std::remove_cvref_t<Fs>, Behavior> && ...))
  Behavior(Fs&&... handlers) {  // NOLINT: implicit on purpose, `return { ... };`
    (handlers_.push_back(detail::make_handler(std::forward<Fs>(handlers))), ...);
  }

  // The handler for a type tag, or nullptr.
  [[nodiscard]] const detail::Handler* find(std::uint64_t tag) const {
    for (const auto& h : handlers_)
      if (h.tag == tag) return &h;
    return nullptr;
  }
  [[nodiscard]] bool empty() const noexcept { return handlers_.empty(); }

 private:
  std::vector<detail::Handler> handlers_;
};

}  // namespace mpx::actors
