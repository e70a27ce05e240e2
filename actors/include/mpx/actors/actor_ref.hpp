// mpx/actors/actor_ref.hpp: the handle of an actor, local or in another process.
//
//     mpx::actors::ActorRef a = worker.spawn("adder", "adder-1");
//     a.send(Add{3, 4});                          // fire and forget
//     int sum = a.request<int>(Add{1, 2}).get(1s);
//     a.to_string();                              // "<actor adder-1 on worker-1 pid 4242>" (also operator<<)
//
// Contract
// - An ActorRef names (node, host, actor name, instance id). It is a value:
//   copyable, comparable, hashable, printable and serializable (it can travel
//   inside messages), valid in every process of the tree that made the host.
//   node() is empty for an actor of this process tree; an actor on another
//   node (node.hpp) names that node, and the same calls (send, request,
//   monitor, link, kill) reach it through this tree's Node. A ref that
//   crosses to another node inside a message is qualified with this node's
//   name on the way (a ref naming the receiving node becomes local there).
// - A ref with a name addresses the actor by name: it stays valid across a
//   restart of the host (messages sent meanwhile wait in the host's
//   mailbox). A ref without a name addresses one instance: once that
//   instance is gone, requests to it fail with ActorDown.
// - send() encodes the message into the host's mailbox (another process) or
//   hands a copy to the actor directly (same process, no encoding). It
//   blocks while the mailbox is at its bound under the `block` policy;
//   send(msg, timeout) then throws MailboxFull after the timeout,
//   send_nowait(msg) at once. A send to a host that is not running waits in
//   its mailbox. A message the actor has no handler for is logged (warn) and
//   dropped.
// - request<R>(msg) sends and returns a Response<R> (response.hpp); it
//   fails fast with ActorDown when the host is not running or dies.
// - Messages from one sender (an actor, or one thread of plain code) to one
//   actor are handled in the order sent, across processes too.
// - Any thread may use a ref. Inside a handler, sends carry the actor as
//   sender (Context::sender() on the other side).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <compare>
#include <cstdint>
#include <functional>
#include <ostream>
#include <string>

#include "mpx/actors/detail/value.hpp"
#include "mpx/actors/response.hpp"
#include "mpx/detail/deadline.hpp"

namespace mpx::actors {

class ActorRef;

namespace detail {
// Routes a message (throws MailboxFull, MessageTooLarge, ActorError).
void send_value(const ActorRef& to, const Value& message, const mpx::detail::Deadline& deadline, bool block);
std::shared_ptr<PendingRequest> request_value(const ActorRef& to, const Value& message);
void kill_actor(const ActorRef& target);
// This process tree's node name (empty when it has no Node; node.hpp).
const std::string& local_node_name() noexcept;
// Clears `node` when it names this process tree's node.
void localize_node(std::string& node) noexcept;
}  // namespace detail

class ActorRef {
 public:
  using Timeout = std::chrono::duration<double>;

  ActorRef() = default;
  ActorRef(std::string host, std::string name, std::uint64_t id, pid_t pid)
      : host_(std::move(host)), name_(std::move(name)), id_(id), pid_(pid) {}
  // An actor on another node (node empty: this process tree).
  ActorRef(std::string node, std::string host, std::string name, std::uint64_t id, pid_t pid)
      : host_(std::move(host)), name_(std::move(name)), id_(id), pid_(pid), node_(std::move(node)) {
    detail::localize_node(node_);
  }

  [[nodiscard]] const std::string& host() const noexcept { return host_; }
  // The node the actor lives on; empty: this process tree.
  [[nodiscard]] const std::string& node() const noexcept { return node_; }
  [[nodiscard]] const std::string& name() const noexcept { return name_; }
  [[nodiscard]] std::uint64_t id() const noexcept { return id_; }
  // The pid of the host process when the ref was made (0 if unknown).
  [[nodiscard]] pid_t pid() const noexcept { return pid_; }
  [[nodiscard]] bool valid() const noexcept { return !host_.empty(); }
  explicit operator bool() const noexcept { return valid(); }

  template <class T>
  void send(const T& message) const {
    detail::send_value(*this, detail::borrow_value(message), mpx::detail::Deadline::never(), true);
  }
  template <class T>
  void send(const T& message, Timeout timeout) const {
    detail::send_value(*this, detail::borrow_value(message), mpx::detail::Deadline::after(timeout), true);
  }
  template <class T>
  void send_nowait(const T& message) const {
    detail::send_value(*this, detail::borrow_value(message), mpx::detail::Deadline::never(), false);
  }
  template <class R, class T>
  [[nodiscard]] Response<R> request(const T& message) const {
    return Response<R>(detail::request_value(*this, detail::borrow_value(message)));
  }
  // Stops the actor at once (reason "killed"); messages queued for it are dropped.
  void kill() const { detail::kill_actor(*this); }

  // <actor adder-1 on worker-1 pid 4242>, <actor #3 on worker-1 pid 4242>,
  // <actor adder-1 on worker-1@node-b pid 4242>
  [[nodiscard]] std::string to_string() const;

  // Identity is (node, host, name, id); pid is informational.
  friend bool operator==(const ActorRef& a, const ActorRef& b) noexcept {
    return a.host_ == b.host_ && a.name_ == b.name_ && a.id_ == b.id_ && a.node_ == b.node_;
  }
  friend std::strong_ordering operator<=>(const ActorRef& a, const ActorRef& b) noexcept {
    if (auto c = a.node_ <=> b.node_; c != 0) return c;
    if (auto c = a.host_ <=> b.host_; c != 0) return c;
    if (auto c = a.name_ <=> b.name_; c != 0) return c;
    return a.id_ <=> b.id_;
  }

  // A local ref is written with this node's name (empty without a node),
  // so it still names this node when read on another one.
  template <class A>
  void serialize(A& ar) {
    if constexpr (A::is_saving::value) {
      ar(host_, name_, id_, pid_, node_.empty() ? detail::local_node_name() : node_);
    } else {
      ar(host_, name_, id_, pid_, node_);
      detail::localize_node(node_);
    }
  }

 private:
  std::string host_;
  std::string name_;
  std::uint64_t id_ = 0;
  pid_t pid_ = 0;
  std::string node_;
};

std::ostream& operator<<(std::ostream& out, const ActorRef& ref);

}  // namespace mpx::actors

template <>
struct std::hash<mpx::actors::ActorRef> {
  std::size_t operator()(const mpx::actors::ActorRef& ref) const noexcept {
    std::size_t h = std::hash<std::string>{}(ref.host());
    h ^= std::hash<std::string>{}(ref.name()) + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
    h ^= std::hash<std::uint64_t>{}(ref.id()) + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
    if (!ref.node().empty()) h ^= std::hash<std::string>{}(ref.node()) + 0x9e3779b97f4a7c15ULL + (h << 6) + (h >> 2);
    return h;
  }
};
