// How a host child's options and actors cross to another process or node:
// a nested supervisor's spec under forkserver or spawn (supervisor.cpp) and a
// supervised host started on another node (remote_host.cpp) write them the
// same way. HostOptions' durations travel as milliseconds, enums as
// integers, ProcessLimits as its own serialize() writes it.
#pragma once

#include <cstdint>
#include <optional>
#include <vector>

#include "mpx/actors/host.hpp"
#include "mpx/process.hpp"

namespace mpx::actors::detail {

inline std::int32_t start_method_code(const std::optional<StartMethod>& m) {
  return m ? static_cast<std::int32_t>(*m) : -1;
}
inline std::optional<StartMethod> start_method_of(std::int32_t code) {
  if (code < 0) return std::nullopt;
  return static_cast<StartMethod>(code);
}

template <class A>
void save_host_spec(A& ar, const HostOptions& h, const std::vector<ActorSpec>& actors) {
  ar(h.daemon, start_method_code(h.start_method), static_cast<std::uint64_t>(h.mailbox.capacity),
     static_cast<std::uint64_t>(h.mailbox.bytes), static_cast<std::int32_t>(h.mailbox.policy),
     static_cast<std::uint64_t>(h.mailbox.in_flight), h.threads, static_cast<std::int64_t>(h.shutdown_timeout.count()),
     static_cast<std::int64_t>(h.spawn_timeout.count()), h.limits, h.standby, static_cast<std::uint64_t>(actors.size()));
  for (const auto& a : actors) ar(a.type, a.name, a.args.tag, a.args.bytes);
}

template <class A>
void load_host_spec(A& ar, HostOptions& h, std::vector<ActorSpec>& actors) {
  std::int32_t host_method = -1, policy = 0;
  std::uint64_t capacity = 0, bytes = 0, in_flight = 0, count = 0;
  std::int64_t shutdown_timeout = 0, spawn_timeout = 0;
  ar(h.daemon, host_method, capacity, bytes, policy, in_flight, h.threads, shutdown_timeout, spawn_timeout, h.limits,
     h.standby, count);
  h.start_method = start_method_of(host_method);
  h.mailbox.capacity = static_cast<std::size_t>(capacity);
  h.mailbox.bytes = static_cast<std::size_t>(bytes);
  h.mailbox.policy = static_cast<MailboxPolicy>(policy);
  h.mailbox.in_flight = static_cast<std::size_t>(in_flight);
  h.shutdown_timeout = std::chrono::milliseconds(shutdown_timeout);
  h.spawn_timeout = std::chrono::milliseconds(spawn_timeout);
  actors.clear();
  for (std::uint64_t k = 0; k < count; ++k) {
    ActorSpec a;
    ar(a.type, a.name, a.args.tag, a.args.bytes);  // type_name stays empty: only for messages
    actors.push_back(std::move(a));
  }
}

}  // namespace mpx::actors::detail
