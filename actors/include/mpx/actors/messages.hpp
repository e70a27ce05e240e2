// mpx/actors/messages.hpp: the messages the actor layer itself defines.
//
//   PoisonPill   send it to stop an actor after everything queued before it
//                (reason "normal"). Handled by the layer, never by user code.
//   Down         delivered to a monitor when the monitored actor stops, or
//                its node is lost (DownKind::node_down).
//   ExitSignal   delivered to an actor that traps exits when a linked actor
//                stopped abnormally or its node was lost (without
//                trap_exit, the actor stops too).
#pragma once

#include <optional>
#include <string>

#include "mpx/actors/actor_ref.hpp"

namespace mpx::actors {

struct PoisonPill {
  template <class A>
  void serialize(A&) {}
};

// Why an actor stopped.
enum class DownKind {
  normal,     // returned from a poison pill or stop(), or its host shut down in order
  exception,  // a handler threw (reason: "exception: <type>: <message>")
  killed,     // kill()
  host_died,  // its host process died (exit_code: as Process reports it, when known)
  noproc,     // there was no such actor when the monitor was set (Erlang's noproc)
  linked,     // a linked actor stopped abnormally
  node_down,  // the actor's node was lost: died, link cut past the heartbeat
              // timeout, or said goodbye; the actor itself may still run
};

[[nodiscard]] const char* to_string(DownKind kind) noexcept;

struct Down {
  ActorRef actor;
  DownKind kind = DownKind::normal;
  std::string reason;              // human-readable, includes the kind
  std::optional<int> exit_code;    // host_died only, when known
  template <class A>
  void serialize(A& ar) {
    ar(actor, kind, reason, exit_code);
  }
};

struct ExitSignal {
  ActorRef from;
  DownKind kind = DownKind::normal;
  std::string reason;
  template <class A>
  void serialize(A& ar) {
    ar(from, kind, reason);
  }
};

}  // namespace mpx::actors
