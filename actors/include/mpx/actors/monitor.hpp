// mpx/actors/monitor.hpp: watching an actor from plain code.
//
//     auto m = mpx::actors::monitor(ref);
//     std::optional<Down> down = m.wait(1s);      // nullopt: still running
//     mpx::actors::monitor(ref, [](const Down& d) { ... });   // or a callback
//
// Contract
// - A Down arrives once when the actor stops: normal, exception, killed,
//   or its host process died (within ~100 ms, with the exit code when this
//   process is the host's parent or the parent has recorded it). Monitoring
//   an actor that does not exist gives Down{noproc} at once.
// - An actor on another node (node.hpp) is watched the same way; when that
//   node is lost (dead, cut off past the heartbeat timeout, or not
//   connected) the Down is host_died with a reason starting "node down".
// - The callback runs on this process' actor gateway thread: keep it short
//   and do not block in it.
// - Inside an actor, use Context::monitor (the Down arrives as a message).
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <optional>

#include "mpx/actors/actor_ref.hpp"
#include "mpx/actors/messages.hpp"
#include "mpx/detail/deadline.hpp"

namespace mpx::actors {

namespace detail {
struct MonitorState;
std::optional<Down> wait_monitor(MonitorState& state, const mpx::detail::Deadline& deadline);
}  // namespace detail

class Monitor {
 public:
  explicit Monitor(std::shared_ptr<detail::MonitorState> state) : state_(std::move(state)) {}
  Down wait() { return *detail::wait_monitor(*state_, mpx::detail::Deadline::never()); }
  template <class Rep, class Period>
  std::optional<Down> wait(std::chrono::duration<Rep, Period> timeout) {
    return detail::wait_monitor(*state_, mpx::detail::Deadline::after(timeout));
  }

 private:
  std::shared_ptr<detail::MonitorState> state_;
};

Monitor monitor(const ActorRef& actor);
void monitor(const ActorRef& actor, std::function<void(const Down&)> callback);

}  // namespace mpx::actors
