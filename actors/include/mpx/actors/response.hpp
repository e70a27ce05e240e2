// mpx/actors/response.hpp: the answer to a request, as a future.
//
//     int sum = adder.request<int>(Add{1, 2}).get(1s);
//
// Contract
// - get() blocks until the reply arrives; get(timeout) throws
//   mpx::TimeoutError when it does not arrive in time (the request may still
//   be handled; a late reply is dropped). Both throw the failure instead of a
//   value: ActorDown (the actor is gone or its host died: within ~100 ms of
//   the death, whatever the timeout; NodeDown, an ActorDown, for an actor
//   on another node once that node is detected lost: NodeOptions' heartbeat
//   timeout, 1.5 s by default), RemoteError (the handler threw),
//   Unhandled (no handler for the message type), ActorError (the reply has
//   another type than R). get may be called more than once (same outcome).
// - wait(timeout) returns whether the outcome is there; ready() polls.
// - then(on_value, on_error) is for code running inside an actor: the
//   callbacks run later in that actor, one at a time with its handlers,
//   never blocking it. on_error receives the mpx::Error the get() would
//   throw. Outside an actor, then() throws ActorError.
// - Thread safety: one Response may be used from any thread; copies share
//   one outcome.
#pragma once

#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>

#include "mpx/actors/detail/value.hpp"
#include "mpx/actors/errors.hpp"
#include "mpx/detail/deadline.hpp"
#include "mpx/serialization.hpp"

namespace mpx::actors {

namespace detail {
struct PendingRequest;
// Blocks until the outcome is there or the deadline passes (false).
bool wait_pending(PendingRequest& pending, const mpx::detail::Deadline& deadline);
// The outcome, once there: throws the failure, or returns the reply as a
// local object (value.object set) or as encoded bytes.
struct ReplyView {
  const Value* local = nullptr;
  std::span<const std::byte> encoded;
};
ReplyView pending_result(PendingRequest& pending);
// Runs `continuation` in the requesting actor once the outcome is there.
void set_continuation(PendingRequest& pending, std::function<void()> continuation);
[[noreturn]] void throw_reply_type_mismatch(std::string_view expected, std::string_view got);

template <class R>
R extract_reply(PendingRequest& pending) {
  ReplyView view = pending_result(pending);
  if constexpr (std::is_void_v<R>) {
    return;
  } else {
    if (view.local) {
      if (view.local->tag != mpx::type_tag<R>()) throw_reply_type_mismatch(mpx::type_name<R>(), view.local->type_name);
      return *static_cast<const R*>(view.local->object);
    }
    return mpx::decode<R>(view.encoded);
  }
}
}  // namespace detail

template <class R>
class Response {
 public:
  explicit Response(std::shared_ptr<detail::PendingRequest> pending) : pending_(std::move(pending)) {}

  R get() { return get_until(mpx::detail::Deadline::never()); }
  template <class Rep, class Period>
  R get(std::chrono::duration<Rep, Period> timeout) {
    return get_until(mpx::detail::Deadline::after(timeout));
  }
  template <class Rep, class Period>
  [[nodiscard]] bool wait(std::chrono::duration<Rep, Period> timeout) {
    return detail::wait_pending(*pending_, mpx::detail::Deadline::after(timeout));
  }
  [[nodiscard]] bool ready() { return detail::wait_pending(*pending_, mpx::detail::Deadline::after(std::chrono::seconds(0))); }

  template <class OnValue, class OnError>
  void then(OnValue on_value, OnError on_error) {
    auto pending = pending_;
    detail::set_continuation(*pending_, [pending, on_value = std::move(on_value), on_error = std::move(on_error)]() mutable {
      if constexpr (std::is_void_v<R>) {
        try {
          detail::extract_reply<void>(*pending);
        } catch (const mpx::Error& error) {
          on_error(error);
          return;
        }
        on_value();
      } else {
        std::optional<R> value;
        try {
          value.emplace(detail::extract_reply<R>(*pending));
        } catch (const mpx::Error& error) {
          on_error(error);
          return;
        }
        on_value(std::move(*value));
      }
    });
  }

 private:
  R get_until(const mpx::detail::Deadline& deadline) {
    if (!detail::wait_pending(*pending_, deadline))
      throw mpx::TimeoutError("mpx::actors: request timed out waiting for " + std::string(mpx::type_name<R>()));
    return detail::extract_reply<R>(*pending_);
  }
  std::shared_ptr<detail::PendingRequest> pending_;
};

}  // namespace mpx::actors
