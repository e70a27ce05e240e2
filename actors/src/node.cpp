// Node: a process tree as a node on CAF's middleman (see mpx/actors/node.hpp).
//
// One gateway actor per node, in the node's own CAF actor system (with the
// middleman, and CAF's OpenSSL module for TLS), carries the traffic. What is
// published on the node's address is a doorman that only runs the
// handshake and hands its gateway to an authenticated peer: any CAF peer can
// send the published actor an unconditional exit (exit_reason::kill), so the
// doorman is respawned when that happens, and strangers never learn the
// gateway (and its beater: heartbeats go between beaters, so that a backlog
// of frames cannot hold them back). A frame between gateways is a std::vector<char>: [u16 host length]
// [host] [packet], the packet being the bytes a mailbox record holds
// (runtime.hpp). Packets for another node reach the Node directly in the
// node's process, or through its outbound mailbox ("@<name>") from the other
// processes of the tree. The Node remembers the requests and monitors it
// carried to each peer, so that a peer lost fails them at once, and the
// address of each peer it connected to, so that a thread of its own can
// connect to a lost one again (NodeOptions::reconnect_interval).
#include "mpx/actors/node.hpp"

#include <netdb.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
#include <cstring>
#include <map>
#include <mutex>
#include <thread>
#include <tuple>

#include <caf/actor_companion.hpp>
#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <caf/openssl/all.hpp>

#include "mpx/actors/detail/death_watch.hpp"
#include "mpx/detail/identity.hpp"
#include "mpx/logging.hpp"
#include "remote_host.hpp"
#include "runtime.hpp"

namespace mpx::actors::detail {

namespace {

using hello_atom = caf::atom_constant<caf::atom("mpx_hello")>;
using challenge_atom = caf::atom_constant<caf::atom("mpx_chal")>;
using auth_atom = caf::atom_constant<caf::atom("mpx_auth")>;
using connect_atom = caf::atom_constant<caf::atom("mpx_conn")>;
using beat_atom = caf::atom_constant<caf::atom("mpx_beat")>;
using tick_atom = caf::atom_constant<caf::atom("mpx_tick")>;
using bye_atom = caf::atom_constant<caf::atom("mpx_bye")>;
using watch_atom = caf::atom_constant<caf::atom("mpx_watch")>;
using deferred_atom = caf::atom_constant<caf::atom("mpx_defer")>;

using Clock = std::chrono::steady_clock;
using mpx::detail::Deadline;

// A packet from a peer waits at most this long for room in a local mailbox:
// the gateway must keep serving heartbeats.
constexpr auto kLocalPutTimeout = std::chrono::milliseconds(200);

std::string random_nonce() {
  std::string nonce(32, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(nonce.data()), static_cast<int>(nonce.size())) != 1)
    throw NodeError("mpx nodes: OpenSSL could not produce random bytes");
  return nonce;
}

// HMAC-SHA256 over the protocol name, the role and length-prefixed fields:
// each proof binds both names and both nonces.
std::string proof(const std::string& secret, std::string_view role, std::initializer_list<std::string_view> fields) {
  std::string message = "mpx-node-1";
  message += '\0';
  message += role;
  for (std::string_view f : fields) {
    const auto n = static_cast<std::uint32_t>(f.size());
    message.append(reinterpret_cast<const char*>(&n), sizeof n);
    message.append(f);
  }
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (!HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()),
            reinterpret_cast<const unsigned char*>(message.data()), message.size(), out, &len))
    throw NodeError("mpx nodes: OpenSSL cannot compute HMAC-SHA256");
  return std::string(reinterpret_cast<const char*>(out), len);
}

bool same_proof(const std::string& a, const std::string& b) {
  return a.size() == b.size() && CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

// A TCP connect bounded by `timeout` (CAF's own connect has none): an
// unreachable peer is a NodeError now, not after the kernel's retries.
void probe_tcp(const std::string& address, std::uint16_t port, std::chrono::milliseconds timeout) {
  addrinfo hints{};
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  if (int rc = ::getaddrinfo(address.c_str(), std::to_string(port).c_str(), &hints, &found); rc != 0)
    throw NodeError("mpx nodes: cannot resolve '" + address + "': " + ::gai_strerror(rc));
  std::unique_ptr<addrinfo, void (*)(addrinfo*)> guard(found, ::freeaddrinfo);
  const int fd = ::socket(found->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) throw NodeError(std::string("mpx nodes: socket: ") + std::strerror(errno));
  int error = 0;
  if (::connect(fd, found->ai_addr, found->ai_addrlen) != 0) {
    error = errno;
    if (error == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      int ready = ::poll(&p, 1, static_cast<int>(timeout.count()));
      if (ready == 0) {
        error = ETIMEDOUT;
      } else {
        socklen_t len = sizeof error;
        if (::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &len) != 0) error = errno;
      }
    }
  }
  ::close(fd);
  if (error != 0)
    throw NodeError("mpx nodes: cannot reach " + address + ":" + std::to_string(port) + ": " + std::strerror(error));
}

}  // namespace

class NodeImpl {
 public:
  explicit NodeImpl(NodeOptions opts);
  ~NodeImpl();

  // Sends a packet to `host` on `node`; fails what waits for an answer at
  // once when that node is not connected.
  void send(std::string_view node, std::string_view host, std::span<const std::byte> head,
            std::span<const std::byte> body);
  std::string connect(const std::string& address, std::uint16_t port, std::chrono::milliseconds timeout);
  void node_down(const std::string& peer, const std::string& why);
  std::string peer_endpoint(const std::string& peer) const;
  bool is_connected(const std::string& peer) const;
  std::vector<std::string> peer_names() const;

  NodeOptions options;
  std::string endpoint_name;
  pid_t pid = ::getpid();
  std::uint16_t port = 0;
  bool tls = false;

 private:
  friend caf::behavior gateway_actor(caf::event_based_actor* self, NodeImpl* node);
  friend caf::behavior doorman_actor(caf::event_based_actor* self, NodeImpl* node);
  friend caf::behavior beater_actor(caf::event_based_actor* self, NodeImpl* node);
  // Publishes doorman_ on `on_port` (options.port, then the port it got).
  caf::expected<std::uint16_t> publish_doorman(std::uint16_t on_port);
  struct Peer {
    std::string endpoint;  // its node process' endpoint ("p<pid>")
    std::uint64_t pid = 0;
    caf::actor gateway;
    caf::actor beater;
    caf::actor inlet;  // where our frames go
    Clock::time_point last_seen;
  };
  struct Handshake {
    std::string name, endpoint, nonce_client, nonce_server;
    std::uint64_t pid = 0;
    caf::actor beater, inlet;
  };
  struct Tracked {
    std::string node;
    bool monitor = false;
    ActorRef target;
  };

  void add_peer(const std::string& peer, std::string endpoint, std::uint64_t peer_pid, caf::actor gateway,
                caf::actor beater, caf::actor inlet);
  std::string peer_of(const caf::actor_addr& addr) const;
  // A frame from a peer, as the inlet receives it (in a BASP thread of CAF's).
  void on_arrival(caf::mailbox_element_ptr element);
  // Handles a frame from the peer whose gateway is `from`. With `may_wait`
  // false (the inlet) it must not wait or run user code: it returns false
  // when the frame needs that, leaving it for the gateway (may_wait true).
  bool on_frame(const caf::actor_addr& from, const std::vector<char>& frame, bool may_wait);
  // on_frame's hand-over of a well-formed packet from `peer` for `host`.
  bool hand_over(const std::string& peer, const std::string& host, std::span<const std::byte> packet,
                 const Deadline& deadline, bool may_wait);
  void fail(const std::string& origin, std::uint64_t id, const Tracked& tracked, const std::string& why);
  // Inbound: a request, spawn or monitor from a peer for a host of this tree
  // is remembered until its answer leaves (send), so that when that host
  // dies (its watchers and the request die with it) this node answers in its
  // place: ActorDown / Down{host_died} with the exit code.
  bool watch_inbound(const std::string& peer, const std::string& host, std::span<const std::byte> packet);
  void sweep_inbound();
  void forward(const Mailbox::Taken& taken);
  void run_forwarder();
  void run_redialer();

  std::unique_ptr<caf::actor_system_config> config_;
  std::unique_ptr<caf::actor_system> system_;
  caf::actor gateway_;
  caf::actor doorman_;  // replaced by the gateway (under mutex_), read by it and by the destructor
  // Heartbeats have an actor of their own: a backlog of frames in the
  // gateway's mailbox (a burst into a full local mailbox) must not hold them
  // back and make a busy peer look silent.
  caf::actor beater_;
  // Peers send their frames to the inlet, a companion actor: CAF's BASP
  // threads hand each one over as it arrives (on_arrival; BASP delivers
  // under its queue's mutex, one frame at a time), one scheduling hop fewer
  // than through the gateway's mailbox. A frame that would have to
  // wait (a full local mailbox) or that may run user code (a monitor
  // callback, an actor's constructor) goes to the gateway instead, and so do
  // all frames after it until the gateway has handled those: the order of
  // one sender's packets holds and CAF's threads never block.
  caf::actor inlet_;
  caf::actor_id inlet_id_ = 0;  // set once: the gateway checks deferred frames' sender against it
  std::mutex arrival_mutex_;
  std::size_t deferred_frames_ = 0;  // handed to the gateway, not handled yet (under arrival_mutex_)
  std::shared_ptr<Mailbox> outbound_;
  std::thread forwarder_;
  std::atomic<bool> stopping_{false};

  mutable std::mutex mutex_;
  std::map<std::string, Peer, std::less<>> peers_;  // authenticated, up
  std::map<caf::actor_addr, std::string> by_addr_;    // peers' gateways
  std::map<caf::actor_addr, std::string> by_beater_;  // peers' beaters
  // By client gateway and client nonce: one gateway may run several at once
  // (a reconnect under way and a connect() of the user).
  std::map<std::pair<caf::actor_addr, std::string>, Handshake> handshakes_;
  std::map<std::pair<std::string, std::uint64_t>, Tracked> tracked_;  // (origin endpoint, request/monitor id)
  struct Inbound {
    PacketKind kind = PacketKind::message;
    ActorRef sender;  // qualified by its node
    ActorRef target;  // here
    std::shared_ptr<Mailbox> mailbox;
    std::uint32_t incarnation = 0;
    pid_t pid = 0;
  };
  static constexpr std::size_t kMaxInbound = 1u << 16;  // past it, unanswered ones wait for their timeout
  std::map<std::tuple<std::string, std::string, std::uint64_t>, Inbound, std::less<>> inbound_;  // (peer, host, id)
  std::atomic<bool> sweep_now_{false};
  std::unique_ptr<DeathWatch> death_watch_;  // of the hosts inbound_ waits on

  // Reconnecting: where each peer this node connected to was reached, and
  // the lost ones to connect to again (due time, current backoff).
  struct Address {
    std::string host;
    std::uint16_t port = 0;
  };
  struct Redial {
    Address address;
    Clock::time_point due;
    std::chrono::milliseconds backoff;
  };
  std::map<std::string, Address, std::less<>> dialed_;
  std::map<std::string, Redial, std::less<>> redial_;
  std::condition_variable redial_cv_;  // with mutex_: a new lost peer, or stopping_
  std::thread redialer_;
  // Starts and watches the hosts other nodes' supervisors ask for (remote_host.hpp).
  std::shared_ptr<HostKeeper> keeper_;
};

namespace {
std::atomic<NodeImpl*> g_node{nullptr};
pid_t g_node_pid = 0;

caf::actor_companion* companion(const caf::actor& inlet) {
  return static_cast<caf::actor_companion*>(caf::actor_cast<caf::abstract_actor*>(inlet));
}

// Stops the inlet: once a frame being handed over is done, no more come
// (dropping the handler takes the lock each hand-over holds), and the actor
// is unregistered so that the actor system can shut down. What CAF 0.17's
// actor_companion::disconnect did; 0.17 declares it but does not define it
// (and its cleanup() leaves the handler in place).
void close_inlet(caf::actor_system& system, const caf::actor& inlet) {
  companion(inlet)->on_enqueue({});
  caf::scoped_execution_unit unit{&system};
  companion(inlet)->cleanup(caf::exit_reason::user_shutdown, &unit);
}

caf::actor_addr sender_of(caf::event_based_actor* self) {
  return caf::actor_cast<caf::actor_addr>(self->current_sender());
}
}  // namespace

// The published actor: the server side of the handshake. It proves the
// secret, checks the client's proof, and only then hands out the gateway.
caf::behavior doorman_actor(caf::event_based_actor* self, NodeImpl* node) {
  self->set_default_handler(caf::drop);  // never CAF's print to stdout
  self->set_exit_handler([self, node](caf::exit_msg& msg) {
    if (node->stopping_.load()) self->quit(msg.reason);
  });
  return {
      [self, node](hello_atom, const std::string& client, const std::string& client_endpoint, std::uint64_t client_pid,
                   const std::string& nonce_client, const caf::actor& client_beater,
                   const caf::actor& client_inlet) -> caf::message {
        if (!client_inlet) return caf::make_message(challenge_atom::value, false);  // not a node of this version
        NodeImpl::Handshake hs{client,     client_endpoint, nonce_client, random_nonce(), client_pid, client_beater,
                               client_inlet};
        auto mine = proof(node->options.secret, "server", {node->options.name, client, nonce_client, hs.nonce_server});
        auto reply = caf::make_message(challenge_atom::value, node->options.name, node->endpoint_name,
                                       static_cast<std::uint64_t>(node->pid), hs.nonce_server, std::move(mine));
        std::lock_guard lock(node->mutex_);
        if (node->handshakes_.size() > 1024) node->handshakes_.clear();  // abandoned ones
        node->handshakes_[{sender_of(self), nonce_client}] = std::move(hs);
        return reply;
      },
      [self, node](auth_atom, const std::string& client_proof, const std::string& nonce_client) -> caf::message {
        const caf::actor_addr from = sender_of(self);
        std::optional<NodeImpl::Handshake> hs;
        {
          std::lock_guard lock(node->mutex_);
          auto it = node->handshakes_.find({from, nonce_client});
          if (it != node->handshakes_.end()) {
            hs = std::move(it->second);
            node->handshakes_.erase(it);
          }
        }
        const bool ok = hs && same_proof(client_proof, proof(node->options.secret, "client",
                                                             {hs->name, node->options.name, hs->nonce_server,
                                                              hs->nonce_client}));
        if (!ok) {
          get_logger()->warn("mpx nodes: {} refused node '{}': it did not prove the shared secret",
                             node->options.name, hs ? hs->name : std::string("?"));
          return caf::make_message(auth_atom::value, false, caf::actor{}, caf::actor{}, caf::actor{});
        }
        auto client_gateway = caf::actor_cast<caf::actor>(self->current_sender());
        node->add_peer(hs->name, hs->endpoint, hs->pid, client_gateway, hs->beater, hs->inlet);
        self->send(node->gateway_, watch_atom::value, client_gateway);
        return caf::make_message(auth_atom::value, true, node->gateway_, node->beater_, node->inlet_);
      },
  };
}

// Heartbeats: every heartbeat_interval, a beat to each peer's beater, and a
// peer silent for heartbeat_timeout (nothing from its beater, no frame) is down.
caf::behavior beater_actor(caf::event_based_actor* self, NodeImpl* node) {
  self->set_default_handler(caf::drop);  // never CAF's print to stdout
  self->set_exit_handler([self, node](caf::exit_msg& msg) {
    if (node->stopping_.load()) self->quit(msg.reason);
  });
  self->delayed_send(self, node->options.heartbeat_interval, tick_atom::value);
  return {
      [self, node](beat_atom) {
        std::lock_guard lock(node->mutex_);
        auto it = node->by_beater_.find(sender_of(self));
        if (it == node->by_beater_.end()) return;
        auto peer = node->peers_.find(it->second);
        if (peer != node->peers_.end()) peer->second.last_seen = Clock::now();
      },
      [self, node](tick_atom) {
        if (sender_of(self) != self->address()) return;  // only our own timer
        const auto now = Clock::now();
        std::vector<caf::actor> alive;
        std::vector<std::string> silent;
        {
          std::lock_guard lock(node->mutex_);
          for (auto& [name, peer] : node->peers_) {
            if (now - peer.last_seen > node->options.heartbeat_timeout) {
              silent.push_back(name);
            } else {
              alive.push_back(peer.beater);
            }
          }
        }
        for (auto& beater : alive) self->send(beater, beat_atom::value);
        for (auto& name : silent)
          node->node_down(name, "no heartbeat for " + std::to_string(node->options.heartbeat_timeout.count()) + " ms");
        self->delayed_send(self, node->options.heartbeat_interval, tick_atom::value);
      },
  };
}

caf::behavior gateway_actor(caf::event_based_actor* self, NodeImpl* node) {
  self->set_default_handler(caf::drop);  // never CAF's print to stdout
  // A peer can send an exit message: the gateway only stops when its Node closes.
  self->set_exit_handler([self, node](caf::exit_msg& msg) {
    if (node->stopping_.load()) self->quit(msg.reason);
  });
  self->set_down_handler([self, node](caf::down_msg& msg) {
    if (msg.source == node->doorman_.address()) {
      if (node->stopping_.load()) return;
      get_logger()->warn("mpx nodes: {}: the doorman was stopped from outside ({}); opening a new one",
                         node->options.name, self->system().render(msg.reason));
      {
        std::lock_guard lock(node->mutex_);
        node->doorman_ = self->system().spawn(doorman_actor, node);
      }
      self->monitor(node->doorman_);
      if (auto port = node->publish_doorman(node->port); !port)
        get_logger()->error("mpx nodes: {}: cannot listen again: {}", node->options.name,
                            self->system().render(port.error()));
      return;
    }
    std::string peer = node->peer_of(msg.source);
    if (!peer.empty()) node->node_down(peer, "its connection closed");
  });
  self->monitor(node->doorman_);
  return {
      // A frame the inlet could not hand over without waiting (on_arrival).
      [self, node](deferred_atom, const caf::actor_addr& from, const std::vector<char>& frame) {
        const auto& sender = self->current_sender();
        if (!sender || sender->id() != node->inlet_id_ || sender->node() != self->node()) return;
        struct Done {  // also when on_frame throws: later frames must not wait for this one forever
          NodeImpl* node;
          ~Done() {
            std::lock_guard lock(node->arrival_mutex_);
            --node->deferred_frames_;
          }
        } done{node};
        (void)node->on_frame(from, frame, true);
      },
      [self, node](watch_atom, const caf::actor& peer) {
        if (sender_of(self) == node->doorman_.address()) self->monitor(peer);
      },
      // Client side (from Node::connect): hello, check the server's proof, send ours.
      [self, node](connect_atom, const caf::actor& remote) {
        if (!self->current_sender() || self->current_sender()->node() != self->node()) return;  // local callers only
        auto rp = self->make_response_promise();  // (takes the sender out of the current message)
        const std::string nonce_client = random_nonce();
        const auto timeout = node->options.connect_timeout;
        self->request(remote, timeout, hello_atom::value, node->options.name, node->endpoint_name,
                      static_cast<std::uint64_t>(node->pid), nonce_client, node->beater_, node->inlet_)
            .then(
                [self, node, rp, remote, nonce_client, timeout](challenge_atom, const std::string& server,
                                                                const std::string& server_endpoint,
                                                                std::uint64_t server_pid, const std::string& nonce_server,
                                                                const std::string& server_proof) mutable {
                  auto expected =
                      proof(node->options.secret, "server", {server, node->options.name, nonce_client, nonce_server});
                  if (!same_proof(server_proof, expected)) {
                    get_logger()->warn("mpx nodes: {} refused node '{}': it did not prove the shared secret",
                                       node->options.name, server);
                    rp.deliver(connect_atom::value, false,
                               std::string("node '" + server + "' did not prove the shared secret"));
                    return;
                  }
                  auto mine = proof(node->options.secret, "client", {node->options.name, server, nonce_server, nonce_client});
                  self->request(remote, timeout, auth_atom::value, std::move(mine), nonce_client)
                      .then(
                          [self, node, rp, server, server_endpoint, server_pid](
                              auth_atom, bool ok, const caf::actor& server_gateway,
                              const caf::actor& server_beater, const caf::actor& server_inlet) mutable {
                            if (!ok || !server_gateway || !server_inlet) {
                              rp.deliver(connect_atom::value, false,
                                         std::string("node '" + server + "' refused us (wrong secret?)"));
                              return;
                            }
                            self->monitor(server_gateway);
                            node->add_peer(server, server_endpoint, server_pid, server_gateway, server_beater,
                                           server_inlet);
                            rp.deliver(connect_atom::value, true, server);
                          },
                          [rp](caf::error& err) mutable { rp.deliver(std::move(err)); });
                },
                [rp](caf::error& err) mutable { rp.deliver(std::move(err)); });
      },
      [self, node](bye_atom) {
        std::string peer = node->peer_of(sender_of(self));
        if (!peer.empty()) node->node_down(peer, "it closed its endpoint");
        return bye_atom::value;
      },
  };
}

NodeImpl::NodeImpl(NodeOptions opts) : options(std::move(opts)) {
  if (options.name.empty()) {
    char host[256] = {};
    ::gethostname(host, sizeof host - 1);
    options.name = std::string(host) + "-" + std::to_string(::getpid());
    for (char& c : options.name)
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_' && c != '.') c = '-';
    if (options.name.size() > 64) options.name = options.name.substr(options.name.size() - 64);
  }
  check_name(options.name, "node name");
  if (options.secret.empty()) throw NodeError("mpx nodes: NodeOptions::secret is required (the deployment's shared secret)");
  if (options.heartbeat_interval.count() <= 0 || options.heartbeat_timeout <= options.heartbeat_interval)
    throw NodeError("mpx nodes: heartbeat_timeout must be longer than a positive heartbeat_interval");
  if (options.reconnect_interval.count() < 0 ||
      (options.reconnect_interval.count() > 0 && options.reconnect_max_interval < options.reconnect_interval))
    throw NodeError("mpx nodes: reconnect_max_interval must be at least a non-negative reconnect_interval");
  tls = !options.tls_certificate.empty() || !options.tls_key.empty() || !options.tls_cafile.empty();
  if (tls && (options.tls_certificate.empty() || options.tls_key.empty() || options.tls_cafile.empty()))
    throw NodeError("mpx nodes: TLS needs tls_certificate, tls_key and tls_cafile");
  if (!local_node_name().empty() && local_node_name() != options.name)
    throw NodeError("mpx nodes: this process tree is already node '" + local_node_name() + "'");
  NodeImpl* expected = nullptr;
  if (!g_node.compare_exchange_strong(expected, this) && g_node_pid == mpx::detail::current_pid())
    throw NodeError("mpx nodes: this process already has a Node");
  g_node.store(nullptr);

  // The outbound mailbox of the tree's other processes.
  MailboxOptions box;
  box.bytes = std::max<std::size_t>(box.bytes, 4 * (options.max_message_size + 4096));
  // A node restarted at once after a SIGKILL finds the mailbox its dead
  // process left (the tracker unlinks it later): it takes it over.
  bool adopted = false;
  try {
    outbound_ = Mailbox::create_or_adopt(mailbox_name(node_mailbox_host(options.name)), box, adopted);
  } catch (const FileExistsError&) {
    throw NodeError("mpx nodes: a node named '" + options.name + "' already exists in this process tree");
  }
  if (adopted)
    get_logger()->warn("mpx nodes: node '{}' took over the outbound mailbox its dead process left", options.name);
  outbound_->attach_consumer();
  endpoint_name = Endpoint::instance().name();

  config_ = std::make_unique<caf::actor_system_config>();
  config_->set("scheduler.max-threads", std::max(1u, options.threads));
  config_->set("scheduler.policy", caf::atom("sharing"));
  config_->load<caf::io::middleman>();
  if (tls) {
    config_->load<caf::openssl::manager>();
    config_->openssl_certificate = options.tls_certificate;
    config_->openssl_key = options.tls_key;
    config_->openssl_cafile = options.tls_cafile;
    config_->openssl_passphrase = options.tls_passphrase;
  }
  system_ = std::make_unique<caf::actor_system>(*config_);
  doorman_ = system_->spawn(doorman_actor, this);
  beater_ = system_->spawn(beater_actor, this);  // before the gateway: the handshakes hand it out
  gateway_ = system_->spawn(gateway_actor, this);
  inlet_ = system_->spawn<caf::actor_companion>();
  inlet_id_ = inlet_.id();
  companion(inlet_)->on_enqueue(
      [this](caf::mailbox_element_ptr element) { on_arrival(std::move(element)); });
  auto published = publish_doorman(options.port);
  if (!published) {
    std::string why = system_->render(published.error());
    stopping_.store(true);
    close_inlet(*system_, inlet_);
    caf::anon_send_exit(gateway_, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(doorman_, caf::exit_reason::user_shutdown);
    caf::anon_send_exit(beater_, caf::exit_reason::user_shutdown);
    inlet_ = nullptr;
    gateway_ = nullptr;
    beater_ = nullptr;
    doorman_ = nullptr;
    system_.reset();
    outbound_->retire();
    outbound_->unlink();
    throw NodeError("mpx nodes: cannot listen on " + options.address + ":" + std::to_string(options.port) + ": " +
                    why);
  }
  port = *published;
  set_local_node(options.name, options.max_message_size);
  g_node_pid = mpx::detail::current_pid();
  g_node.store(this, std::memory_order_release);
  death_watch_ = std::make_unique<DeathWatch>([this] {
    sweep_now_.store(true, std::memory_order_seq_cst);
    outbound_->interrupt_consumer();
  });
  forwarder_ = std::thread([this] { run_forwarder(); });
  if (options.reconnect_interval.count() > 0) redialer_ = std::thread([this] { run_redialer(); });
  keeper_ = start_host_keeper(options.name, options.orphan_host_timeout,
                              [this](const std::string& peer) { return is_connected(peer); });
  get_logger()->info("mpx nodes: node '{}' listens on {}:{}{}", options.name, options.address, port,
                     tls ? " (TLS)" : "");
}

NodeImpl::~NodeImpl() {
  stop_host_keeper(std::move(keeper_));  // shuts down the hosts other nodes' supervisors started here
  // Before the tree stops routing to this node: a frame handed over later
  // could answer through the outbound mailbox nobody reads any more and
  // wait forever in a thread of CAF's.
  close_inlet(*system_, inlet_);
  g_node.store(nullptr, std::memory_order_release);
  stopping_.store(true);
  outbound_->interrupt_consumer();
  if (forwarder_.joinable()) forwarder_.join();
  {
    std::lock_guard lock(mutex_);  // the redialer checks stopping_ under it
  }
  redial_cv_.notify_all();
  if (redialer_.joinable()) redialer_.join();  // waits for an attempt under way (bounded)
  // Goodbye to the peers, each bounded: they see this node down at once.
  std::vector<caf::actor> gateways;
  {
    std::lock_guard lock(mutex_);
    for (auto& [name, peer] : peers_) gateways.push_back(peer.gateway);
  }
  // stopping_ is set: the exit below is honoured.
  {
    caf::scoped_actor self{*system_};
    for (auto& gateway : gateways)
      self->request(gateway, std::chrono::milliseconds(500), bye_atom::value)
          .receive([](bye_atom) {}, [](caf::error&) {});
  }
  gateways.clear();
  caf::anon_send_exit(gateway_, caf::exit_reason::user_shutdown);
  caf::anon_send_exit(beater_, caf::exit_reason::user_shutdown);
  {
    std::lock_guard lock(mutex_);
    caf::anon_send_exit(doorman_, caf::exit_reason::user_shutdown);
    peers_.clear();  // no actor handle may outlive the system
    by_addr_.clear();
    by_beater_.clear();
    handshakes_.clear();
  }
  inlet_ = nullptr;
  gateway_ = nullptr;
  doorman_ = nullptr;
  beater_ = nullptr;
  system_.reset();
  outbound_->retire();
  outbound_->unlink();
  set_local_node("", 0);  // the tree may make another Node
}

caf::expected<std::uint16_t> NodeImpl::publish_doorman(std::uint16_t on_port) {
  if (on_port != 0 && port == on_port) {
    // Republishing: CAF keeps the port of a dead published actor open.
    if (tls) {
      auto close = caf::make_function_view(system_->openssl_manager().actor_handle());
      (void)close(caf::close_atom::value, on_port);
    } else {
      (void)system_->middleman().close(on_port);
    }
  }
  return tls ? caf::openssl::publish(doorman_, on_port, options.address.c_str(), true)
             : system_->middleman().publish(doorman_, on_port, options.address.c_str(), true);
}

void NodeImpl::add_peer(const std::string& peer, std::string endpoint, std::uint64_t peer_pid, caf::actor gateway,
                        caf::actor beater, caf::actor inlet) {
  std::string replaced;
  {
    std::lock_guard lock(mutex_);
    auto it = peers_.find(peer);
    if (it != peers_.end() && it->second.gateway != gateway) replaced = peer;  // the node restarted
  }
  if (!replaced.empty()) node_down(replaced, "it connected again as a new process");
  {
    std::lock_guard lock(mutex_);
    by_addr_[gateway.address()] = peer;
    if (beater) by_beater_[beater.address()] = peer;
    peers_[peer] =
        Peer{std::move(endpoint), peer_pid, std::move(gateway), std::move(beater), std::move(inlet), Clock::now()};
    redial_.erase(peer);  // back, whoever connected
  }
  get_logger()->info("mpx nodes: {} connected to node '{}'", options.name, peer);
}

std::string NodeImpl::peer_of(const caf::actor_addr& addr) const {
  std::lock_guard lock(mutex_);
  auto it = by_addr_.find(addr);
  return it == by_addr_.end() ? std::string() : it->second;
}

std::string NodeImpl::peer_endpoint(const std::string& peer) const {
  std::lock_guard lock(mutex_);
  auto it = peers_.find(peer);
  if (it == peers_.end()) throw NodeDown("mpx nodes: node '" + peer + "' is not connected", "node down: not connected");
  return it->second.endpoint;
}

bool NodeImpl::is_connected(const std::string& peer) const {
  std::lock_guard lock(mutex_);
  return peers_.count(peer) != 0;
}

std::vector<std::string> NodeImpl::peer_names() const {
  std::lock_guard lock(mutex_);
  std::vector<std::string> out;
  for (auto& [name, peer] : peers_) out.push_back(name);
  return out;
}

void NodeImpl::node_down(const std::string& peer, const std::string& why) {
  std::vector<std::pair<std::pair<std::string, std::uint64_t>, Tracked>> lost;
  {
    std::lock_guard lock(mutex_);
    auto it = peers_.find(peer);
    if (it == peers_.end()) return;
    by_addr_.erase(it->second.gateway.address());
    if (it->second.beater) by_beater_.erase(it->second.beater.address());
    peers_.erase(it);
    if (auto d = dialed_.find(peer); d != dialed_.end() && options.reconnect_interval.count() > 0 && !stopping_.load()) {
      redial_[peer] = Redial{d->second, Clock::now() + options.reconnect_interval, options.reconnect_interval};
      redial_cv_.notify_all();
    }
    for (auto t = tracked_.begin(); t != tracked_.end();) {
      if (t->second.node == peer) {
        lost.emplace_back(t->first, std::move(t->second));
        t = tracked_.erase(t);
      } else {
        ++t;
      }
    }
  }
  get_logger()->warn("mpx nodes: {}: node '{}' is down: {}", options.name, peer, why);
  const std::string reason = "node down: node '" + peer + "' " + why;
  for (auto& [key, tracked] : lost) fail(key.first, key.second, tracked, reason);
}

void NodeImpl::fail(const std::string& origin, std::uint64_t id, const Tracked& tracked, const std::string& why) {
  const ActorRef me(endpoint_name, "", 0, pid);
  try {
    if (tracked.monitor) {
      Down down{tracked.target, DownKind::node_down, why, {}};
      post_packet(origin, PacketKind::down, 0, "", 0, me, id, borrow_value(down), Deadline::never(), true);
    } else {
      ErrorInfo info{"nodedown", "", "mpx nodes: request to node '" + tracked.node + "' failed: " + why, why};
      post_packet(origin, PacketKind::error, 0, "", 0, me, id, borrow_value(info), Deadline::never(), true);
    }
  } catch (const std::exception& e) {
    get_logger()->debug("mpx nodes: could not tell {} about node '{}': {}", origin, tracked.node, e.what());
  }
}

void NodeImpl::send(std::string_view node, std::string_view host, std::span<const std::byte> head,
                    std::span<const std::byte> body) {
  const std::size_t size = head.size() + body.size();
  if (size > options.max_message_size)
    throw MessageTooLarge("mpx nodes: a message of " + std::to_string(size) + " bytes for node '" + std::string(node) +
                          "' is larger than the maximum of " + std::to_string(options.max_message_size) + " bytes");
  PacketHead ph;
  std::memcpy(&ph, head.data(), sizeof ph);
  if (ph.kind == PacketKind::reply || ph.kind == PacketKind::error || ph.kind == PacketKind::down) {
    std::lock_guard lock(mutex_);
    if (!inbound_.empty()) inbound_.erase(std::make_tuple(std::string(node), std::string(host), ph.request_id));
  }
  const bool waits = (ph.kind == PacketKind::message && ph.request_id) || ph.kind == PacketKind::spawn ||
                     ph.kind == PacketKind::monitor;
  std::optional<std::pair<std::pair<std::string, std::uint64_t>, Tracked>> tracked;
  if (waits) {
    Packet p = parse_packet(head);
    tracked.emplace(std::make_pair(p.sender.host(), p.request_id),
                    Tracked{std::string(node), ph.kind == PacketKind::monitor,
                            ActorRef(std::string(node), std::string(host), std::string(p.target_name), p.target_id, 0)});
  }
  caf::actor to;
  {
    std::lock_guard lock(mutex_);
    auto it = peers_.find(node);
    if (it != peers_.end()) {
      to = it->second.inlet;
      if (tracked) tracked_[tracked->first] = tracked->second;
    }
  }
  if (!to) {
    const std::string why = "node down: node '" + std::string(node) + "' is not connected";
    if (tracked) {
      fail(tracked->first.first, tracked->first.second, tracked->second, why);
    } else {
      get_logger()->debug("mpx nodes: a message for node '{}' dropped: {}", node, why);
    }
    return;
  }
  std::vector<char> frame(2 + host.size() + size);
  const auto host_len = static_cast<std::uint16_t>(host.size());
  char* p = frame.data();
  std::memcpy(p, &host_len, 2);
  std::memcpy(p + 2, host.data(), host.size());
  std::memcpy(p + 2 + host.size(), head.data(), head.size());
  if (!body.empty()) std::memcpy(p + 2 + host.size() + head.size(), body.data(), body.size());
  caf::send_as(gateway_, to, std::move(frame));
}

void NodeImpl::on_arrival(caf::mailbox_element_ptr element) {
  const caf::type_erased_tuple& content = element->content();
  if (!content.match_elements<std::vector<char>>()) return;  // peers send frames only; anything else is dropped
  const auto from = caf::actor_cast<caf::actor_addr>(element->sender);
  const auto& frame = content.get_as<std::vector<char>>(0);
  std::lock_guard lock(arrival_mutex_);
  if (deferred_frames_ == 0 && on_frame(from, frame, false)) return;
  ++deferred_frames_;
  caf::send_as(inlet_, gateway_, deferred_atom::value, from, frame);
}

bool NodeImpl::on_frame(const caf::actor_addr& from, const std::vector<char>& frame, bool may_wait) {
  std::string peer;
  {
    std::lock_guard lock(mutex_);
    auto it = by_addr_.find(from);
    if (it != by_addr_.end()) {
      peer = it->second;
      peers_.find(peer)->second.last_seen = Clock::now();
    }
  }
  if (peer.empty()) {
    // Maybe a frame that overtook the end of our handshake with its peer (the
    // auth reply is in the gateway's mailbox): the gateway decides, after
    // it. (A frame the peer sent before its auth reply is still lost.)
    if (!may_wait) return false;
    get_logger()->warn("mpx nodes: {}: a message from an unauthenticated peer dropped", options.name);
    return true;
  }
  std::uint16_t host_len = 0;
  if (frame.size() < 2 + sizeof(PacketHead) ||
      (std::memcpy(&host_len, frame.data(), 2), frame.size() < 2u + host_len + sizeof(PacketHead)) ||
      frame.size() > options.max_message_size + 2 + host_len) {
    get_logger()->error("mpx nodes: {}: a malformed or oversized frame from node '{}' dropped", options.name, peer);
    return true;
  }
  std::string host(frame.data() + 2, host_len);
  if (host == kNodeProcessHost) host = endpoint_name;  // the node process, whatever its pid
  auto packet = std::as_bytes(std::span(frame)).subspan(2 + host_len);
  PacketHead ph;
  std::memcpy(&ph, packet.data(), sizeof ph);
  const auto deadline = Deadline::after(kLocalPutTimeout);
  const bool handled = [&] {
    try {
      return hand_over(peer, host, packet, deadline, may_wait);
    } catch (const std::exception& e) {
      get_logger()->error("mpx nodes: {}: a packet from node '{}' for host '{}' dropped: {}", options.name, peer, host,
                          e.what());
      return true;  // dropped and logged
    }
  }();
  // An answer no longer waits on that node: node_down has nothing to fail for
  // it. Only once handled: a frame left to the gateway may still meet its
  // node going down first, and then node_down must fail what it answered.
  if (handled && (ph.kind == PacketKind::reply || ph.kind == PacketKind::error || ph.kind == PacketKind::down)) {
    std::lock_guard lock(mutex_);
    tracked_.erase(std::make_pair(host, ph.request_id));
  }
  return handled;
}

bool NodeImpl::hand_over(const std::string& peer, const std::string& host, std::span<const std::byte> packet,
                         const Deadline& deadline, bool may_wait) {
  PacketHead ph;
  std::memcpy(&ph, packet.data(), sizeof ph);
  if (host != endpoint_name) {
    if (!watch_inbound(peer, host, packet)) return true;  // answered here: that host is gone
    // (watch_inbound again when the gateway takes a frame this put left: it is idempotent)
    return post_from_node(host, packet, peer, deadline, may_wait);
  }
  // For this process: handled here, one mailbox hop and one thread wake-up
  // fewer (every packet from other nodes for it comes this way, so one
  // sender's packets keep their order).
  Packet parsed = parse_packet(packet);
  if (ph.kind == PacketKind::reply || ph.kind == PacketKind::error) {
    Endpoint::instance().answer(parsed);  // wakes the requester or posts its continuation: no user code here
    return true;
  }
  // A Down runs monitor callbacks; a spawn, an actor's constructor; a
  // monitor or link may wait for room to answer: not on CAF's threads.
  if (!may_wait && ph.kind != PacketKind::message && ph.kind != PacketKind::kill) return false;
  // The sender as this node sees it: "host@peer" (whatever the peer wrote).
  parsed.sender = ActorRef(peer, parsed.sender.host(), parsed.sender.name(), parsed.sender.id(), parsed.sender.pid());
  return Endpoint::instance().dispatch_from_node(parsed, deadline, may_wait);
}

bool NodeImpl::watch_inbound(const std::string& peer, const std::string& host, std::span<const std::byte> packet) {
  PacketHead ph;
  std::memcpy(&ph, packet.data(), sizeof ph);
  const bool answered = (ph.kind == PacketKind::message && ph.request_id) || ph.kind == PacketKind::spawn ||
                        ph.kind == PacketKind::monitor;
  if (!answered || host == endpoint_name) return true;  // this process answers for itself
  auto mailbox = find_mailbox(host);
  if (!mailbox) return true;  // post_from_node answers noproc
  Packet parsed = parse_packet(packet);
  Inbound in{ph.kind,
             ActorRef(peer, parsed.sender.host(), parsed.sender.name(), parsed.sender.id(), parsed.sender.pid()),
             ActorRef(host, std::string(parsed.target_name), parsed.target_id, 0),
             mailbox,
             mailbox->incarnation(),
             mailbox->consumer_pid()};
  if (host_not_serving(*mailbox, in.incarnation)) {
    // As a request from this tree would: it fails at once (a plain message waits for a restart).
    std::lock_guard lock(mutex_);
    inbound_[{peer, in.sender.host(), parsed.request_id}] = std::move(in);
    sweep_now_.store(true);
    outbound_->interrupt_consumer();
    return false;
  }
  {
    std::lock_guard lock(mutex_);
    if (inbound_.size() >= kMaxInbound) return true;
    inbound_[{peer, in.sender.host(), parsed.request_id}] = in;
  }
  death_watch_->watch(in.pid);
  return true;
}

void NodeImpl::forward(const Mailbox::Taken& taken) {
  try {
    std::uint16_t lens[2];
    if (taken.bytes.size() < sizeof lens) throw ActorError("a record too short");
    std::memcpy(lens, taken.bytes.data(), sizeof lens);
    if (taken.bytes.size() < sizeof lens + lens[0] + lens[1] + sizeof(PacketHead)) throw ActorError("a record too short");
    const char* text = reinterpret_cast<const char*>(taken.bytes.data()) + sizeof lens;
    std::string_view node(text, lens[0]);
    std::string_view host(text + lens[0], lens[1]);
    send(node, host, taken.bytes.subspan(sizeof lens + lens[0] + lens[1]), {});
  } catch (const std::exception& e) {
    get_logger()->error("mpx nodes: {}: a packet from this tree dropped: {}", options.name, e.what());
  }
  outbound_->complete(taken.pos);
}

void NodeImpl::sweep_inbound() {
  // Which hosts are gone now; then everything they wrote before dying leaves
  // (their replies and Downs come first); then the rest is answered here.
  std::vector<std::tuple<std::string, std::string, std::uint64_t>> gone;
  {
    // One liveness probe per (mailbox, incarnation, pid), as Endpoint::sweep_watches:
    // many requests in hand at one host cost one probe.
    std::map<std::tuple<const Mailbox*, std::uint32_t, pid_t>, bool> probed;
    std::lock_guard lock(mutex_);
    for (auto& [key, in] : inbound_) {
      const auto host = std::make_tuple(in.mailbox.get(), in.incarnation, in.pid);
      auto it = probed.find(host);
      if (it == probed.end()) it = probed.emplace(host, host_gone(*in.mailbox, in.incarnation, in.pid)).first;
      if (it->second) gone.push_back(key);
    }
  }
  if (gone.empty()) return;
  for (;;) {
    std::optional<Mailbox::Taken> taken;
    try {
      taken = outbound_->take(Deadline::after(std::chrono::seconds(0)));
    } catch (const std::exception& e) {
      get_logger()->error("mpx nodes: outbound mailbox of {}: {}", options.name, e.what());
    }
    if (!taken) break;
    forward(*taken);
  }
  for (const auto& key : gone) {
    Inbound in;
    {
      std::lock_guard lock(mutex_);
      auto it = inbound_.find(key);
      if (it == inbound_.end()) continue;  // answered by the host after all
      in = std::move(it->second);
      inbound_.erase(it);
    }
    const std::string why = describe_dead_host(*in.mailbox, in.target.host(), in.pid);
    const ActorRef me(in.target.host(), "", 0, in.pid);
    try {
      if (in.kind == PacketKind::monitor) {
        Down down{in.target, DownKind::host_died, why, host_exit_code(in.target.host(), in.pid, *in.mailbox)};
        post_packet(route_name(in.sender), PacketKind::down, 0, "", 0, me, std::get<2>(key), borrow_value(down),
                    Deadline::never(), true);
      } else {
        ErrorInfo info{"down", "", "mpx actors: request to " + in.target.to_string() + " failed: " + why, why};
        post_packet(route_name(in.sender), PacketKind::error, 0, "", 0, me, std::get<2>(key), borrow_value(info),
                    Deadline::never(), true);
      }
    } catch (const std::exception& e) {
      get_logger()->debug("mpx nodes: could not tell {} that host {} is gone: {}", route_name(in.sender),
                          in.target.host(), e.what());
    }
  }
}

void NodeImpl::run_forwarder() {
  auto next_sweep = Clock::now() + std::chrono::milliseconds(100);
  while (!stopping_.load(std::memory_order_acquire)) {
    std::optional<Mailbox::Taken> taken;
    try {
      taken = outbound_->take(Deadline::after(std::chrono::milliseconds(100)), &sweep_now_);
    } catch (const std::exception& e) {
      get_logger()->error("mpx nodes: outbound mailbox of {}: {}", options.name, e.what());
    }
    if (taken) forward(*taken);
    // A death the watch saw, or every 100 ms (a pid past the watch's limit, a reused pid).
    if (sweep_now_.exchange(false) || Clock::now() >= next_sweep) {
      next_sweep = Clock::now() + std::chrono::milliseconds(100);
      try {
        sweep_inbound();
      } catch (const std::exception& e) {
        get_logger()->error("mpx nodes: {}: sweep: {}", options.name, e.what());
      }
    }
  }
}

std::string NodeImpl::connect(const std::string& address, std::uint16_t peer_port, std::chrono::milliseconds timeout) {
  const auto deadline = Deadline::after(timeout);
  probe_tcp(address, peer_port, timeout);
  auto remote = tls ? caf::openssl::remote_actor(*system_, address, peer_port)
                    : system_->middleman().remote_actor(address, peer_port);
  if (!remote)
    throw NodeError("mpx nodes: " + options.name + " cannot connect to " + address + ":" + std::to_string(peer_port) +
                    ": " + system_->render(remote.error()));
  const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
      deadline.remaining().value_or(std::chrono::nanoseconds(timeout)));
  std::string result;
  bool ok = false;
  {
    caf::scoped_actor self{*system_};
    self->request(gateway_, std::max(left, std::chrono::milliseconds(1)), connect_atom::value, *remote)
        .receive(
            [&](connect_atom, bool good, const std::string& text) {
              ok = good;
              result = text;
            },
            [&](caf::error& err) { result = system_->render(err); });
  }
  if (!ok) {
    get_logger()->warn("mpx nodes: {} could not connect to {}:{}: {}", options.name, address, peer_port, result);
    throw NodeError("mpx nodes: " + options.name + " cannot connect to " + address + ":" + std::to_string(peer_port) +
                    ": " + result);
  }
  std::lock_guard lock(mutex_);
  dialed_[result] = Address{address, peer_port};
  return result;
}

void NodeImpl::run_redialer() {
  // An attempt is bounded (the destructor waits for it): a peer that does not
  // answer within a heartbeat timeout is not back yet.
  const auto attempt_timeout = std::min(options.connect_timeout, options.heartbeat_timeout);
  std::unique_lock lock(mutex_);
  while (!stopping_.load()) {
    auto next = redial_.end();
    for (auto it = redial_.begin(); it != redial_.end(); ++it)
      if (next == redial_.end() || it->second.due < next->second.due) next = it;
    if (next == redial_.end()) {
      redial_cv_.wait(lock);
      continue;
    }
    if (next->second.due > Clock::now()) {
      // A copy: the entry may be erased while we wait (the peer came back), and
      // wait_until reads its deadline again after waking (ASan found it).
      const Clock::time_point due = next->second.due;
      redial_cv_.wait_until(lock, due);
      continue;
    }
    const std::string peer = next->first;
    const Address address = next->second.address;
    lock.unlock();
    std::string got, error;
    try {
      got = connect(address.host, address.port, attempt_timeout);
    } catch (const std::exception& e) {
      error = e.what();
    }
    lock.lock();
    auto it = redial_.find(peer);
    if (!error.empty()) {
      get_logger()->debug("mpx nodes: {}: reconnecting to node '{}' failed: {}", options.name, peer, error);
      if (it != redial_.end()) {
        it->second.backoff = std::min(it->second.backoff * 2, options.reconnect_max_interval);
        it->second.due = Clock::now() + it->second.backoff;
      }
    } else if (got != peer) {
      // Another node listens there now: it is connected, the lost one is not.
      get_logger()->warn("mpx nodes: {}: found node '{}' at {}:{} instead of lost node '{}'; no longer reconnecting to it",
                         options.name, got, address.host, address.port, peer);
      if (it != redial_.end()) redial_.erase(it);
      if (auto d = dialed_.find(peer); d != dialed_.end() && d->second.host == address.host &&
                                       d->second.port == address.port)
        dialed_.erase(d);
    } else {
      get_logger()->info("mpx nodes: {}: reconnected to node '{}' at {}:{}", options.name, peer, address.host,
                         address.port);
    }
  }
}

// ---- runtime hooks

void forward_to_node(std::string_view node, std::string_view host, std::span<const std::byte> head,
                     std::span<const std::byte> body, const Deadline& deadline, bool block) {
  if (NodeImpl* impl = g_node.load(std::memory_order_acquire); impl && g_node_pid == mpx::detail::current_pid()) {
    impl->send(node, host, head, body);
    return;
  }
  const std::string& me = local_node_name();
  if (me.empty())
    throw NodeDown("mpx nodes: a message for node '" + std::string(node) + "' but this process tree is no node",
                   "node down: no node here");
  const std::size_t size = head.size() + body.size();
  if (std::size_t max = local_node_max_message(); max && size > max)
    throw MessageTooLarge("mpx nodes: a message of " + std::to_string(size) + " bytes for node '" + std::string(node) +
                          "' is larger than the maximum of " + std::to_string(max) + " bytes");
  auto mailbox = find_mailbox(node_mailbox_host(me));
  if (!mailbox) {
    // The caller gets NodeDown, but a reply or a Down has no caller to tell:
    // say it here (issue 13 was such a mailbox unlinked under a live node).
    get_logger()->error("mpx nodes: a packet for node '{}' cannot leave: the outbound mailbox of this tree's node '{}' "
                        "is gone",
                        node, me);
    throw NodeDown("mpx nodes: node '" + me + "' is not running", "node down: no node here");
  }
  thread_local Bytes prefixed;
  const std::uint16_t lens[2] = {static_cast<std::uint16_t>(node.size()), static_cast<std::uint16_t>(host.size())};
  prefixed.resize(sizeof lens + node.size() + host.size() + head.size());
  std::byte* p = prefixed.data();
  std::memcpy(p, lens, sizeof lens);
  std::memcpy(p + sizeof lens, node.data(), node.size());
  std::memcpy(p + sizeof lens + node.size(), host.data(), host.size());
  std::memcpy(p + sizeof lens + node.size() + host.size(), head.data(), head.size());
  if (!mailbox->put(prefixed, body, deadline, block, RecordClass::control))
    throw MailboxFull("mpx nodes: the outbound mailbox of node '" + me + "' is full");
}

}  // namespace mpx::actors::detail

namespace mpx::actors {

Node::Node(NodeOptions options) : impl_(std::make_unique<detail::NodeImpl>(std::move(options))) {}
Node::~Node() = default;

const std::string& Node::name() const { return impl_->options.name; }
std::uint16_t Node::port() const { return impl_->port; }
bool Node::tls() const { return impl_->tls; }

std::string Node::connect(const std::string& address, std::uint16_t port) {
  return impl_->connect(address, port, impl_->options.connect_timeout);
}
std::string Node::connect(const std::string& address, std::uint16_t port, std::chrono::milliseconds timeout) {
  return impl_->connect(address, port, timeout);
}
bool Node::is_connected(const std::string& peer) const { return impl_->is_connected(peer); }
std::vector<std::string> Node::peers() const { return impl_->peer_names(); }

ActorRef Node::actor(const std::string& peer, const std::string& name) const {
  return ActorRef(peer, impl_->peer_endpoint(peer), name, 0, 0);
}
ActorRef Node::actor(const std::string& peer, const std::string& host, const std::string& name) const {
  return ActorRef(peer, host, name, 0, 0);
}

ActorRef Node::spawn_encoded(const std::string& peer, const std::string& host, const std::string& type,
                             const std::string& name, const detail::SpawnArgs& args) {
  const std::string target_host = host.empty() ? impl_->peer_endpoint(peer) : host;
  auto& endpoint = detail::Endpoint::instance();
  auto pending = endpoint.new_pending(nullptr);
  pending->spin = false;  // another node answers
  detail::SpawnRequest request{type, name, args.tag, args.bytes};
  const auto deadline = mpx::detail::Deadline::after(impl_->options.spawn_timeout);
  try {
    detail::post_packet(target_host + "@" + peer, detail::PacketKind::spawn, 0, "", 0, detail::current_sender(),
                        pending->id, detail::borrow_value(request), deadline, true);
  } catch (...) {
    endpoint.forget_pending(pending->id);
    throw;
  }
  if (!detail::wait_pending(*pending, deadline)) {
    endpoint.forget_pending(pending->id);
    throw mpx::TimeoutError("mpx nodes: spawn of '" + type + "' in host '" + target_host + "' of node '" + peer +
                            "' timed out");
  }
  ActorRef ref = detail::extract_reply<ActorRef>(*pending);
  // A host started before its Node wrote its refs without the node's name.
  if (ref.node().empty()) ref = ActorRef(peer, ref.host(), ref.name(), ref.id(), ref.pid());
  return ref;
}

}  // namespace mpx::actors
