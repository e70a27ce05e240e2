// mpx/actors/context.hpp: an actor's view of itself, given to its behaviour
// factory (function-based actors) or its constructor (class-based ones).
//
// Contract
// - A Context lives as long as its actor. Call its members only from the
//   actor's own handlers (and its factory/constructor); they do not block.
// - sender(), redelivered() and make_response_promise() refer to the message
//   being handled. A then() continuation runs outside any message: there
//   sender() is empty, redelivered() false and a promise made there answers
//   nothing. Make the promise in the handler and capture it (behavior.hpp).
// - Down (monitor) and ExitSignal (links with trap_exit) arrive as messages:
//   give the behaviour a handler for them.
#pragma once

#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "mpx/actors/actor_ref.hpp"
#include "mpx/actors/behavior.hpp"
#include "mpx/actors/detail/spawn_args.hpp"

namespace mpx::actors {

namespace detail {
struct ActorCell;
std::shared_ptr<ReplyTarget> take_reply_target(ActorCell& cell);
}  // namespace detail

class Context {
 public:
  explicit Context(detail::ActorCell& cell) : cell_(&cell) {}
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  [[nodiscard]] const ActorRef& self() const;
  [[nodiscard]] const std::string& name() const { return self().name(); }
  [[nodiscard]] const std::string& host() const { return self().host(); }
  // Who sent the message being handled: an actor, or (plain code) a ref
  // with an empty name and id 0 naming its process; invalid when unknown.
  [[nodiscard]] const ActorRef& sender() const;
  // True when the message being handled was in hand when a previous
  // incarnation of the host died: it may have been handled already.
  [[nodiscard]] bool redelivered() const;

  // Takes over the reply to the request being handled.
  template <class R>
  [[nodiscard]] ResponsePromise<R> make_response_promise() {
    return ResponsePromise<R>(detail::take_reply_target(*cell_));
  }

  // A Down arrives as a message when `actor` stops (at once if it is not there).
  void monitor(const ActorRef& actor);
  // Both actors stop when one stops abnormally, unless trapping exits.
  void link(const ActorRef& actor);
  // With trap_exit, a linked actor's abnormal stop arrives as ExitSignal.
  void set_trap_exit(bool trap);
  // Stops this actor (reason "normal") once the current handler returns.
  void stop();

  // Spawns an actor in this host (see Host::spawn).
  template <class... Args>
  ActorRef spawn(const std::string& type, const std::string& name = "", const Args&... args) {
    return spawn_encoded(type, name, detail::encode_spawn_args(args...));
  }

 private:
  ActorRef spawn_encoded(const std::string& type, const std::string& name, const detail::SpawnArgs& args);
  detail::ActorCell* cell_;
};

}  // namespace mpx::actors
