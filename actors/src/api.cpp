// The small public entry points: ActorRef printing, Context, monitors,
// spawning in this process.
#include <unistd.h>

#include <ostream>

#include "mpx/actors/actor_ref.hpp"
#include "mpx/actors/context.hpp"
#include "mpx/actors/host.hpp"
#include "mpx/actors/messages.hpp"
#include "mpx/actors/monitor.hpp"
#include "runtime.hpp"

namespace mpx::actors {

std::string ActorRef::to_string() const {
  if (!valid()) return "<actor none>";
  std::string out = "<actor ";
  if (name_.empty()) {
    out += '#';
    out += std::to_string(id_ & 0xffffffffu);  // the counter; the high half is the host's incarnation
  } else {
    out += name_;
  }
  out += " on ";
  out += host_;
  if (!node_.empty()) {
    out += '@';
    out += node_;
  }
  out += " pid ";
  out += std::to_string(pid_);
  out += '>';
  return out;
}

std::ostream& operator<<(std::ostream& out, const ActorRef& ref) { return out << ref.to_string(); }

const char* to_string(DownKind kind) noexcept {
  switch (kind) {
    case DownKind::normal: return "normal";
    case DownKind::exception: return "exception";
    case DownKind::killed: return "killed";
    case DownKind::host_died: return "host_died";
    case DownKind::noproc: return "noproc";
    case DownKind::linked: return "linked";
    case DownKind::node_down: return "node_down";
  }
  return "unknown";
}

// ---- Context

const ActorRef& Context::self() const { return cell_->ref; }

const ActorRef& Context::sender() const {
  static const ActorRef none;
  const detail::Delivery* d = cell_->current;
  if (!d) return none;
  if (!d->sender && !d->packet.empty()) d->sender = detail::packet_sender(d->packet);
  return d->sender ? *d->sender : none;
}

bool Context::redelivered() const { return cell_->current && cell_->current->redelivered; }

void Context::monitor(const ActorRef& actor) {
  auto& endpoint = detail::Endpoint::instance();
  auto monitor = endpoint.new_monitor(actor, cell_->shared_from_this(), false);
  detail::watch(endpoint, monitor, 0);
}

void Context::link(const ActorRef& actor) {
  auto& endpoint = detail::Endpoint::instance();
  auto me = cell_->shared_from_this();
  // We watch them...
  detail::watch(endpoint, endpoint.new_monitor(actor, me, true), detail::kPacketLink);
  // ...and they watch us.
  if (actor.node().empty() && actor.host() == endpoint.name()) {
    if (auto other = endpoint.find_local(actor.name(), actor.id()))
      detail::watch(endpoint, endpoint.new_monitor(cell_->ref, other, true), detail::kPacketLink);
    return;
  }
  try {
    detail::post_packet(detail::route_name(actor), detail::PacketKind::link, 0, actor.name(), actor.id(), cell_->ref, 0,
                        detail::Value{}, mpx::detail::Deadline::never(), true);
  } catch (const ActorDown&) {
    // No such host: our own link monitor has already reported it.
  }
}

void Context::set_trap_exit(bool trap) { cell_->trap_exit = trap; }

void Context::stop() { cell_->stop_requested = true; }

ActorRef Context::spawn_encoded(const std::string& type, const std::string& name, const detail::SpawnArgs& args) {
  detail::check_spawn(type, args.tag, args.type_name);
  return detail::Endpoint::instance().spawn_local(type, name, args.tag, args.bytes);
}

// ---- monitors from plain code

Monitor monitor(const ActorRef& actor) {
  if (!actor.valid()) throw ActorError("mpx actors: monitor of an empty ActorRef");
  auto& endpoint = detail::Endpoint::instance();
  auto state = endpoint.new_monitor(actor, nullptr, false);
  detail::watch(endpoint, state, 0);
  return Monitor(state);
}

void monitor(const ActorRef& actor, std::function<void(const Down&)> callback) {
  if (!actor.valid()) throw ActorError("mpx actors: monitor of an empty ActorRef");
  auto& endpoint = detail::Endpoint::instance();
  auto state = endpoint.new_monitor(actor, nullptr, false);
  state->callback = std::move(callback);
  detail::watch(endpoint, state, 0);
}

namespace detail {

ActorRef spawn_here(const std::string& type, const std::string& name, const SpawnArgs& args) {
  check_spawn(type, args.tag, args.type_name);
  return Endpoint::instance().spawn_local(type, name, args.tag, args.bytes);
}

}  // namespace detail
}  // namespace mpx::actors
