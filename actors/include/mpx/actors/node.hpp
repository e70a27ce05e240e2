// mpx/actors/node.hpp: a process tree as a node, connected to nodes on other
// machines through CAF's middleman (TCP, optionally TLS).
//
//     mpx::actors::Node node(mpx::actors::NodeOptions{}.with_name("a").with_secret(key));
//     std::string b = node.connect("10.200.0.2", 4242);    // authenticated both ways
//     auto counter = node.actor(b, "counter");              // an actor in b's node process
//     int n = counter.request<int>(Get{}).get(1s);          // the usual ActorRef
//     auto w = node.spawn(b, "worker-1", "adder", "adder-1"); // into host worker-1 on b
//
// Contract
// - One Node per process tree (its name is the tree's node name; refs to its
//   actors carry it on other nodes). Make it before the hosts whose actors
//   talk across nodes: they learn the name and the route from it. Names are
//   [A-Za-z0-9_.-]{1,64}, unique among the nodes that connect.
// - The node listens on options.address:options.port (port 0: ephemeral;
//   port() reports it) and connects to others by address; connections are
//   two-way. Every message crosses as the project's cereal bytes inside a CAF
//   message (std::vector<char>: no CAF type announcement).
// - Authentication: before a peer's messages reach any actor, both sides
//   prove knowledge of the shared secret (HMAC-SHA256 over fresh nonces from
//   both sides, both ways). A peer with a wrong secret is refused, logged
//   (warn) and its frames are dropped. With options.tls_* set, the link is
//   TLS through CAF's OpenSSL module with certificates verified against
//   tls_cafile on both sides (a wrong certificate is refused by the TLS
//   handshake); the secret is checked inside it. Without TLS the traffic is
//   authenticated at connect time but not encrypted (docs/nodes.md).
// - connect(address, port[, timeout]) returns the peer's name once both are
//   authenticated; throws NodeError (unreachable, refused, wrong secret or
//   certificate, timeout). Calling it again after a node went down
//   reconnects: named actors there are reachable again.
// - Failure detection: heartbeats every heartbeat_interval; a peer silent
//   for heartbeat_timeout (default 1.5 s), whose connection closes, or that
//   said goodbye, is down: monitors and links of its actors fire with
//   DownKind::node_down (reason "node down: ..."; the actor itself may still
//   run; a linked actor that does not trap exits stops as DownKind::linked),
//   pending requests to it fail at once with NodeDown, and until it is
//   connected again sends to it are dropped (logged) and requests fail with
//   NodeDown at once.
// - Reconnecting (on by default): a lost peer that this node had connected
//   to (not one that connected to it) is connected to again at the same
//   address and port by a thread of the node, first after
//   reconnect_interval (250 ms), then at doubling intervals up to
//   reconnect_max_interval (5 s), until it is back (by this thread or a
//   connect() call); then refs to actors in its named hosts work again. A
//   restarted peer (SIGKILL, then a new process on the same port) counts.
//   reconnect_interval 0 turns it off.
// - A message larger than max_message_size is refused at the sender with
//   MessageTooLarge.
// - Supervised hosts of other nodes (supervisor.hpp, ChildSpec::with_node):
//   the node runs a host keeper in its process (the actor "mpx.hosts" and a
//   thread that forks, reaps and reports those hosts). The host name
//   "mpx.node" and the actor name "mpx.hosts" are reserved. A host whose
//   supervisor's node has been down for orphan_host_timeout (60 s; 0:
//   never) is shut down and its mailbox released: that supervisor is gone
//   for good (if it comes back, it starts the host anew). Within the
//   timeout a returning supervisor takes its running host back.
// - Methods may be called from any thread of the process that made the
//   node. The destructor shuts down the hosts its keeper runs for other
//   nodes' supervisors (poison pills, 5 s, SIGTERM, 1 s, SIGKILL), stops reconnecting (it waits for an attempt under
//   way, whose TCP probe and handshake are each bounded by
//   min(connect_timeout, heartbeat_timeout)), says goodbye to the peers
//   (they see the node down at once, each goodbye bounded by 500 ms) and
//   closes the endpoint; no thread may still be sending to other nodes
//   meanwhile. The library writes nothing to stdout.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "mpx/actors/actor_ref.hpp"
#include "mpx/actors/detail/spawn_args.hpp"

namespace mpx::actors {

struct NodeOptions {
  std::string name;                // empty: "<hostname>-<pid>"
  std::string address = "127.0.0.1";
  std::uint16_t port = 0;          // 0: ephemeral
  std::string secret;              // required: the shared secret of the deployment
  // TLS (CAF's OpenSSL module): certificate and key of this node (PEM) and
  // the CA file the peers' certificates are checked against. All empty: no TLS.
  std::string tls_certificate;
  std::string tls_key;
  std::string tls_cafile;
  std::string tls_passphrase;
  std::chrono::milliseconds heartbeat_interval{250};
  std::chrono::milliseconds heartbeat_timeout{1500};
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds spawn_timeout{10000};
  // Reconnecting by itself to a lost peer that this node connected to (not
  // one that connected to it): the first try reconnect_interval after the
  // loss, then at doubling intervals up to reconnect_max_interval, until it
  // is back. reconnect_interval 0: off.
  std::chrono::milliseconds reconnect_interval{250};
  std::chrono::milliseconds reconnect_max_interval{5000};
  std::size_t max_message_size = std::size_t{16} << 20;
  unsigned threads = 2;  // CAF scheduler threads of the node's own actor system
  // How long a host kept here for another node's supervisor outlives that
  // node's loss (see the contract); 0: until this node closes.
  std::chrono::milliseconds orphan_host_timeout{60000};

  NodeOptions& with_orphan_host_timeout(std::chrono::milliseconds value) & {
    orphan_host_timeout = value;
    return *this;
  }
  NodeOptions&& with_orphan_host_timeout(std::chrono::milliseconds value) && {
    return std::move(with_orphan_host_timeout(value));
  }

  NodeOptions& with_name(std::string value) & {
    name = std::move(value);
    return *this;
  }
  NodeOptions&& with_name(std::string value) && { return std::move(with_name(std::move(value))); }
  NodeOptions& with_address(std::string value, std::uint16_t port_value = 0) & {
    address = std::move(value);
    port = port_value;
    return *this;
  }
  NodeOptions&& with_address(std::string value, std::uint16_t port_value = 0) && {
    return std::move(with_address(std::move(value), port_value));
  }
  NodeOptions& with_secret(std::string value) & {
    secret = std::move(value);
    return *this;
  }
  NodeOptions&& with_secret(std::string value) && { return std::move(with_secret(std::move(value))); }
  NodeOptions& with_tls(std::string certificate, std::string key, std::string cafile) & {
    tls_certificate = std::move(certificate);
    tls_key = std::move(key);
    tls_cafile = std::move(cafile);
    return *this;
  }
  NodeOptions&& with_tls(std::string certificate, std::string key, std::string cafile) && {
    return std::move(with_tls(std::move(certificate), std::move(key), std::move(cafile)));
  }
  NodeOptions& with_heartbeat(std::chrono::milliseconds interval, std::chrono::milliseconds timeout) & {
    heartbeat_interval = interval;
    heartbeat_timeout = timeout;
    return *this;
  }
  NodeOptions&& with_heartbeat(std::chrono::milliseconds interval, std::chrono::milliseconds timeout) && {
    return std::move(with_heartbeat(interval, timeout));
  }
  NodeOptions& with_reconnect(std::chrono::milliseconds interval, std::chrono::milliseconds max_interval) & {
    reconnect_interval = interval;
    reconnect_max_interval = max_interval;
    return *this;
  }
  NodeOptions&& with_reconnect(std::chrono::milliseconds interval, std::chrono::milliseconds max_interval) && {
    return std::move(with_reconnect(interval, max_interval));
  }
  NodeOptions& with_max_message_size(std::size_t value) & {
    max_message_size = value;
    return *this;
  }
  NodeOptions&& with_max_message_size(std::size_t value) && { return std::move(with_max_message_size(value)); }
};

namespace detail {
class NodeImpl;
}

class Node {
 public:
  explicit Node(NodeOptions options);
  Node(const Node&) = delete;
  Node& operator=(const Node&) = delete;
  ~Node();

  [[nodiscard]] const std::string& name() const;
  [[nodiscard]] std::uint16_t port() const;
  [[nodiscard]] bool tls() const;

  std::string connect(const std::string& address, std::uint16_t port);
  std::string connect(const std::string& address, std::uint16_t port, std::chrono::milliseconds timeout);
  [[nodiscard]] bool is_connected(const std::string& peer) const;
  [[nodiscard]] std::vector<std::string> peers() const;

  // A ref to the actor registered as `name` in `peer`'s node process (the
  // process that made that Node), or in its host `host` (no round trip).
  [[nodiscard]] ActorRef actor(const std::string& peer, const std::string& name) const;
  [[nodiscard]] ActorRef actor(const std::string& peer, const std::string& host, const std::string& name) const;

  // Spawns a registered actor type in host `host` of `peer` ("" : its node
  // process). Throws NodeDown, UnknownActorType / ActorError (from there),
  // TimeoutError after options.spawn_timeout.
  template <class... Args>
  ActorRef spawn(const std::string& peer, const std::string& host, const std::string& type,
                 const std::string& name = "", const Args&... args) {
    return spawn_encoded(peer, host, type, name, detail::encode_spawn_args(args...));
  }

 private:
  ActorRef spawn_encoded(const std::string& peer, const std::string& host, const std::string& type,
                         const std::string& name, const detail::SpawnArgs& args);
  std::unique_ptr<detail::NodeImpl> impl_;
};

}  // namespace mpx::actors
