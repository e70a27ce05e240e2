// Internal: the per-process actor runtime ("endpoint") and what travels
// between endpoints. Not installed.
//
// Every process that hosts actors, or waits for replies and monitors, has
// one Endpoint: its mailbox (a host's is created by its parent and named
// after the host; a plain process makes its own, "p<pid>"), one gateway
// thread that takes records from it and dispatches them, and (once an actor
// lives here) a CAF actor system. Actors of one endpoint talk through CAF
// directly; across endpoints a packet (PacketHead, three strings, an mpx
// envelope) goes into the target's mailbox.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <caf/all.hpp>

#include "mpx/actors/actor_ref.hpp"
#include "mpx/actors/behavior.hpp"
#include "mpx/actors/context.hpp"
#include "mpx/actors/detail/mailbox.hpp"
#include "mpx/actors/detail/value.hpp"
#include "mpx/actors/messages.hpp"
#include "mpx/actors/registry.hpp"
#include "mpx/actors/detail/death_watch.hpp"

namespace mpx::actors::detail {

// ---- the wire

enum class PacketKind : std::uint8_t {
  message = 1,   // to an actor; request_id != 0 makes it a request
  reply = 2,     // payload: the reply value (Unit for void)
  error = 3,     // payload: ErrorInfo
  spawn = 4,     // payload: SpawnRequest; replied with an ActorRef
  monitor = 5,   // request_id: the monitor id at the sender; flags: kLink
  down = 6,      // request_id: the monitor id; payload: Down
  kill = 7,      // stop the target at once
  shutdown = 8,  // stop every actor, then the host
  link = 9,      // the sender links to the target: the target's host watches the sender for it
};
constexpr std::uint8_t kPacketLink = 1;

struct PacketHead {
  std::uint32_t magic;
  PacketKind kind;
  std::uint8_t flags;
  std::uint16_t target_name_len;
  std::uint16_t sender_host_len;
  std::uint16_t sender_name_len;
  std::uint32_t sender_pid;
  std::uint64_t target_id;
  std::uint64_t sender_id;
  std::uint64_t request_id;
  std::uint32_t reply_slot;  // a request: 1 + the requester's mailbox reply slot for it, 0 for none
  std::uint32_t reserved;
};
constexpr std::uint32_t kPacketMagic = 0x4c504d58;  // "XMPL" (with reply_slot; was "XMPK")

struct Packet {
  PacketKind kind;
  std::uint8_t flags;
  std::string_view target_name;
  std::uint64_t target_id;
  ActorRef sender;
  std::uint64_t request_id;
  std::uint32_t reply_slot;  // as in PacketHead
  std::span<const std::byte> payload;
};
// Throws ActorError for a malformed packet. With `sender` false,
// packet.sender is left empty (packet_sender reads it when needed).
Packet parse_packet(std::span<const std::byte> bytes, bool sender = true);
ActorRef packet_sender(std::span<const std::byte> bytes);

struct ErrorInfo {
  std::string kind;  // "down", "remote", "unhandled", "error"
  std::string type;
  std::string message;
  std::string reason;
  template <class A>
  void serialize(A& ar) {
    ar(kind, type, message, reason);
  }
};
[[noreturn]] void throw_error_info(const ErrorInfo& info);
// The ErrorInfo of an error packet's payload (by the log or a reply slot);
// undecodable bytes become an ErrorInfo that says so.
ErrorInfo decode_error_reply(std::span<const std::byte> payload);

struct SpawnRequest {
  std::string type;
  std::string name;
  std::uint64_t args_tag = 0;
  Bytes args;
  template <class A>
  void serialize(A& ar) {
    ar(type, name, args_tag, args);
  }
};

// ---- requests and replies

struct ActorCell;

struct PendingRequest {
  std::uint64_t id = 0;
  std::mutex mutex;
  std::condition_variable cv;
  bool done = false;
  std::atomic<bool> done_flag{false};  // `done`, readable without the mutex (the waiter spins on it first)
  bool spin = true;                    // false: the waiter sleeps at once (a request to another node)
  Value local;                 // a reply from this process
  Bytes encoded;               // a reply from another process
  std::optional<ErrorInfo> error;
  // then(): the requesting actor runs the continuation once done.
  std::shared_ptr<ActorCell> owner;
  std::function<void()> continuation;
  bool continuation_posted = false;
  // Fail-fast: the host that must answer (none for a local target). Set
  // under `mutex` (the gateway's sweep reads them).
  std::shared_ptr<Mailbox> target_mailbox;
  std::uint32_t target_incarnation = 0;
  pid_t target_pid = 0;
  std::string target_host;
  // Death seen at this position of our own mailbox: fail once every record
  // before it was taken (a reply the host sent before dying wins).
  std::optional<std::uint64_t> gone_at;
  // A request from plain code to a host of this machine: the reply comes
  // into this slot of our own mailbox (Mailbox::lease_reply_slot, keyed by
  // `id`), past the gateway; a reply too large for it comes by the log.
  // Set before the request is sent; released once a waiter settled the
  // request (settle_from_slot), else by the destructor.
  std::shared_ptr<Mailbox> slot_mailbox;
  std::uint32_t slot = 0;  // 1 + the slot index; 0: none
  pid_t slot_pid = 0;      // the process that leased it (a forked child's copy does not own it)
  std::atomic<bool> slot_held{true};  // until the request is settled from it (set under `mutex`)
  [[nodiscard]] bool owns_slot() const noexcept;
  PendingRequest() = default;
  PendingRequest(const PendingRequest&) = delete;
  PendingRequest& operator=(const PendingRequest&) = delete;
  ~PendingRequest();
};
void fulfil(const std::shared_ptr<PendingRequest>& pending, Value local, Bytes encoded, std::optional<ErrorInfo> error);

struct ReplyTarget {
  std::string endpoint;  // the requester's endpoint name
  std::uint64_t request_id = 0;
  std::shared_ptr<PendingRequest> local;  // requester in this process
  std::uint32_t reply_slot = 0;           // as in PacketHead: try the requester's slot first
};

// ---- monitors

struct MonitorState {
  std::uint64_t id = 0;
  ActorRef target;
  std::mutex mutex;
  std::condition_variable cv;
  std::optional<Down> down;
  std::function<void(const Down&)> callback;
  std::shared_ptr<ActorCell> owner;  // an actor watching: Down is delivered to it
  bool link = false;
  // The host to watch for death, set under `mutex` (the sweep reads them).
  std::shared_ptr<Mailbox> target_mailbox;
  std::uint32_t target_incarnation = 0;
  pid_t target_pid = 0;
  std::optional<std::uint64_t> gone_at;  // as PendingRequest::gone_at (a Down sent before dying wins)
};

struct Watcher {
  std::string endpoint;
  std::uint64_t monitor_id = 0;
  bool link = false;
  std::shared_ptr<MonitorState> local;  // the watcher is in this process
};

// ---- actors of this process

// What the CAF actor of a cell handles. A message that is destroyed without
// having been handled (its actor stopped first, or was gone) completes its
// mailbox record and fails its request with ActorDown: no bookkeeping of
// queued messages is needed.
struct DeliveryFields {
  enum class Kind : std::uint8_t { message, continuation, down };
  Kind kind = Kind::message;
  bool handled = false;
  std::shared_ptr<ActorCell> cell;        // the target (null: there was none)
  Value value;                            // owned object (same process)
  std::span<const std::byte> bytes;       // encoded message in a mailbox record (or in `owned`)
  Mailbox* mailbox = nullptr;             // set when bytes live in a record: the endpoint's (never destroyed)
  Bytes owned;                            // the bytes of a message from another node, handed over directly
  bool direct = false;                    // counted in Endpoint's direct deliveries
  std::uint64_t record_pos = 0;
  bool redelivered = false;
  // Read on demand: parsed from `packet` (the record's bytes, valid until
  // the record is completed) the first time a handler asks for it. Optional:
  // a message from the log carries none until then, and an empty optional
  // costs nothing to build, move and destroy per message (an ActorRef's
  // strings did).
  mutable std::optional<ActorRef> sender;
  std::span<const std::byte> packet;
  std::shared_ptr<ReplyTarget> reply;     // a request
  std::function<void()> run;              // continuation
  std::shared_ptr<MonitorState> monitor;  // down
};
// Move-only: a moved-from delivery counts as handled (its destructor does
// nothing), so exactly one copy answers for an unhandled message.
struct Delivery : DeliveryFields {
  Delivery() = default;
  Delivery(Delivery&& other) noexcept : DeliveryFields(std::move(other)) { other.handled = true; }
  Delivery(const Delivery&) = delete;
  Delivery& operator=(const Delivery&) = delete;
  Delivery& operator=(Delivery&&) = delete;
  ~Delivery();
};
// One CAF message: deliveries for one actor, handled in order (the gateway
// batches what it takes in a row for the same actor). Held by a shared_ptr
// because CAF 0.17 copies message types; one allocation for the batch, not
// one per message (the gateway allocated and the actor's thread freed a
// Delivery per message, and the two threads contended for malloc's arena).
struct DeliveryBatch {
  std::shared_ptr<std::vector<Delivery>> items;
};

struct ActorCell : std::enable_shared_from_this<ActorCell> {
  ActorRef ref;
  std::string type;
  std::string log_label;  // what its handlers' log lines carry
  std::unique_ptr<Context> context;
  Instance instance;
  caf::actor actor;
  // Touched only by the actor's own thread while it runs a handler.
  const Delivery* current = nullptr;
  std::shared_ptr<ReplyTarget> current_reply;
  bool stop_requested = false;
  std::atomic<bool> trap_exit{false};  // read by the gateway when a linked actor stops
  // Shared with the gateway and other actors: under `mutex`.
  std::mutex mutex;
  bool stopped = false;
  DownKind stop_kind = DownKind::normal;
  std::string stop_reason;
  bool quitting = false;  // the actor's own thread: stop handling the rest of a batch
  std::vector<Watcher> watchers;
};

class Endpoint {
 public:
  // This process' endpoint; a plain process gets one ("p<pid>") on first use.
  static Endpoint& instance();
  // nullptr when this process has none yet.
  static Endpoint* existing() noexcept;
  // In a host process: makes the endpoint on the host's mailbox.
  static Endpoint& make_host(const std::string& name, std::shared_ptr<Mailbox> mailbox, unsigned threads);

  [[nodiscard]] const std::string& name() const { return name_; }
  [[nodiscard]] const std::shared_ptr<Mailbox>& mailbox() const { return mailbox_; }

  // -- local actors
  ActorRef spawn_local(const std::string& type, const std::string& name, std::uint64_t args_tag,
                       std::span<const std::byte> args);
  std::shared_ptr<ActorCell> find_local(std::string_view name, std::uint64_t id);
  // Hands deliveries to a cell; false when the cell has stopped (they are
  // then destroyed unhandled: records completed, requests failed).
  bool enqueue(const std::shared_ptr<ActorCell>& cell, Delivery delivery);
  bool enqueue(const std::shared_ptr<ActorCell>& cell, std::vector<Delivery> deliveries);
  void add_watcher(const ActorRef& target, Watcher watcher);
  void on_cell_stopped(const std::shared_ptr<ActorCell>& cell, DownKind kind, std::string reason);
  [[nodiscard]] std::vector<std::shared_ptr<ActorCell>> cells();

  // -- requests and monitors started here
  std::shared_ptr<PendingRequest> new_pending(const std::shared_ptr<ActorCell>& owner);
  void forget_pending(std::uint64_t id);
  // The table keeps the request only while a Response holds it: a request
  // whose reply comes into a slot needs no one else (see PendingRequest).
  void hold_pending_weakly(std::uint64_t id);
  std::shared_ptr<MonitorState> new_monitor(const ActorRef& target, const std::shared_ptr<ActorCell>& owner, bool link);
  void fire_monitor(const std::shared_ptr<MonitorState>& monitor, Down down);
  // A reply or error packet for a request made here: fulfils it (any thread;
  // the Node hands its peers' answers here without the mailbox hop).
  void answer(const Packet& packet);
  // A packet from another node for this process (the Node's process),
  // handled on the calling thread (a BASP thread of CAF's, or the Node's
  // gateway actor) without a mailbox record: one mailbox hop and one thread
  // wake-up fewer. Every packet from other nodes for this process comes this
  // way, in arrival order, so one sender's packets keep their order.
  // Messages handed to actors and not handled yet are bounded by the
  // mailbox's capacity: past it this waits until `deadline`, then throws
  // MailboxFull; with `wait` false it returns false at once instead, the
  // packet untouched (the caller hands it to a thread that may wait).
  [[nodiscard]] bool dispatch_from_node(Packet& packet, const mpx::detail::Deadline& deadline, bool wait);
  // A message of dispatch_from_node was handled.
  void direct_finished();

  // -- the gateway: runs until stop() (plain process) or a shutdown packet (host).
  void run_gateway();
  void stop_gateway();
  // Host: poison pill to every actor, wait up to `timeout` for them.
  void stop_all_actors(std::chrono::milliseconds timeout);
  [[nodiscard]] bool shutdown_requested() const noexcept { return shutdown_.load(); }
  // A message record handed to an actor was completed.
  void record_finished(std::size_t records = 1);
  // Sweep as soon as `pid` (a host this endpoint waits on) exits, instead of
  // at the next 10 ms tick.
  void watch_death(pid_t pid);

  caf::actor_system& system();

 private:
  Endpoint(std::string name, std::shared_ptr<Mailbox> mailbox, unsigned threads);
  void dispatch(const Mailbox::Taken& taken);
  // What dispatch and dispatch_from_node share: a packet other than a
  // message (`release` is called once, when the packet's bytes are no
  // longer read); a message's delivery (nullopt, after answering noproc,
  // when its actor does not run here).
  void handle_control(const Packet& packet, const std::function<void()>& release);
  // Fills `delivery` (new) with a message packet for its actor; `cell` is
  // kept in it for ~Delivery's answer to an unhandled request (a batch's
  // plain messages go without: the batch holds the cell).
  void fill_message_delivery(Delivery& delivery, Packet& packet, std::shared_ptr<ActorCell> cell);
  // A message packet for an actor not running here: logged, a request
  // answered with ActorDown (noproc).
  void refuse_message(const Packet& packet);
  void flush_batch();
  std::shared_ptr<ActorCell> batch_cell_;
  std::uint64_t batch_generation_ = 0;  // cells_generation_ when batch_cell_ was looked up
  std::vector<Delivery> batch_;
  // A batch's buffer comes back once its deliveries were handled (the
  // deleter of DeliveryBatch::items): with a fresh buffer per batch, perf
  // showed the gateway page-faulting as it filled them, and the actors'
  // threads freeing into the gateway's malloc arena.
  void recycle_batch(std::vector<Delivery>& items) noexcept;
  std::mutex spare_batches_mutex_;
  std::vector<std::vector<Delivery>> spare_batches_;
  void sweep_watches();
  std::shared_ptr<PendingRequest> take_pending(std::uint64_t id);
  std::shared_ptr<MonitorState> take_monitor(std::uint64_t id);

  std::string name_;
  std::shared_ptr<Mailbox> mailbox_;
  unsigned threads_;
  std::once_flag system_once_;
  std::unique_ptr<caf::actor_system_config> config_;
  std::unique_ptr<caf::actor_system> system_;

  std::mutex mutex_;
  std::uint64_t next_id_ = 1;
  std::uint64_t next_request_id_ = 1;  // PendingRequest ids (see new_pending)
  std::unordered_map<std::string, std::shared_ptr<ActorCell>> by_name_;
  std::unordered_map<std::uint64_t, std::shared_ptr<ActorCell>> by_id_;
  // Requests waiting for a reply: held (strong) until it comes, or, for a
  // reply into a slot, only seen (weak) so that a dropped Response frees
  // the request and its slot.
  struct PendingEntry {
    std::shared_ptr<PendingRequest> strong;
    std::weak_ptr<PendingRequest> weak;
    [[nodiscard]] std::shared_ptr<PendingRequest> get() const { return strong ? strong : weak.lock(); }
  };
  std::unordered_map<std::uint64_t, PendingEntry> pending_;
  std::unordered_map<std::uint64_t, std::shared_ptr<MonitorState>> monitors_;
  std::condition_variable cells_changed_;
  // Bumped whenever an actor enters or leaves the tables: the gateway's
  // shortcut for records to its current batch's actor is valid only while
  // it is unchanged (a stopped actor replaced under its name gets the rest).
  std::atomic<std::uint64_t> cells_generation_{0};

  std::atomic<std::size_t> in_flight_{0};  // message records handed to actors, not yet completed
  std::mutex flight_mutex_;
  std::condition_variable flight_cv_;     // dispatch_from_node's waiters
  std::condition_variable gateway_cv_;    // the gateway, waiting for its actors to catch up
  std::size_t direct_in_flight_ = 0;  // dispatch_from_node's messages not handled yet (under flight_mutex_)
  std::atomic<bool> stop_{false};
  std::atomic<bool> shutdown_{false};
  std::atomic<bool> sweep_now_{false};  // set by death_watch_: a watched host exited
  DeathWatch death_watch_;
  std::thread gateway_;
};

// ---- routing helpers shared by the sources

// The tree's shm name for a host's mailbox.
std::string mailbox_name(const std::string& host);
// The mailbox of `host`, opened once per process (reopened when retired);
// nullptr when it does not exist.
std::shared_ptr<Mailbox> find_mailbox(const std::string& host);
// Writes a packet into `host`'s mailbox. Throws ActorDown when there is no
// such mailbox, MailboxFull when full (block=false or the deadline).
void post_packet(const std::string& host, PacketKind kind, std::uint8_t flags, std::string_view target_name,
                 std::uint64_t target_id, const ActorRef& sender, std::uint64_t request_id, const Value& payload,
                 const mpx::detail::Deadline& deadline, bool block, std::uint32_t reply_slot = 0);
// post_packet with the payload already encoded.
void post_encoded(const std::string& host, PacketKind kind, std::uint8_t flags, std::string_view target_name,
                  std::uint64_t target_id, const ActorRef& sender, std::uint64_t request_id,
                  std::span<const std::byte> body, const mpx::detail::Deadline& deadline, bool block,
                  std::uint32_t reply_slot = 0);
// "host", or "host@node" for a ref on another node (what post_packet takes).
std::string route_name(const ActorRef& ref);
// ---- nodes (node.cpp)
// Hands a packet for endpoint `host` of node `node` to this tree's Node (in
// this process, or through its outbound mailbox). Throws NodeDown when the
// tree has no Node, MessageTooLarge past the node's maximum, MailboxFull.
void forward_to_node(std::string_view node, std::string_view host, std::span<const std::byte> head,
                     std::span<const std::byte> body, const mpx::detail::Deadline& deadline, bool block);
// Puts a packet that arrived from node `peer` into local endpoint `host`'s
// mailbox, its sender qualified with `peer`. A request, spawn or monitor
// for a host that does not exist is answered (noproc) through the node.
// Throws MailboxFull when the mailbox has no room by `deadline`. With `wait`
// false it returns false instead of waiting for room or answering noproc,
// nothing done (the caller hands the packet to a thread that may wait).
[[nodiscard]] bool post_from_node(const std::string& host, std::span<const std::byte> packet, const std::string& peer,
                                  const mpx::detail::Deadline& deadline, bool wait);
// This tree's node name and maximum message size (set by the Node, inherited by hosts).
void set_local_node(const std::string& name, std::size_t max_message_size);
std::size_t local_node_max_message() noexcept;
// The outbound mailbox of node `name` (in the tree's shm namespace).
std::string node_mailbox_host(const std::string& name);
// Registers `monitor` as a watcher of its target, wherever it lives (fires
// at once when the target's host is gone).
void watch(Endpoint& endpoint, const std::shared_ptr<MonitorState>& monitor, std::uint8_t flags);
// The ref that names the caller: the running actor, else this process.
const ActorRef& current_sender();
// True when `mailbox`'s host is not serving (never started, stopped, died,
// another incarnation than `incarnation`, or pid dead).
bool host_gone(const Mailbox& mailbox, std::uint32_t incarnation, pid_t pid);
// host_gone without the liveness probe of the pid (no system call).
bool host_not_serving(const Mailbox& mailbox, std::uint32_t incarnation);
std::string describe_host_gone(const Mailbox& mailbox, const std::string& host);
// "host 'w' (pid 42) died: exit code -9"; the exit code is known when this
// process is the host's parent (or the parent recorded it in the mailbox).
std::string describe_dead_host(const Mailbox& mailbox, const std::string& host, pid_t pid);
std::optional<int> host_exit_code(const std::string& host, pid_t pid, const Mailbox& mailbox);
// Defined in host.cpp: the exit code of a host process this process started.
std::optional<int> child_host_exit_code(const std::string& host, pid_t pid);
void remember_mailbox(const std::string& host, std::shared_ptr<Mailbox> mailbox);
void set_tree_root(pid_t root);
pid_t tree_root();
// Checks a host/actor name: [A-Za-z0-9_.-]{1,64}.
void check_name(const std::string& name, const char* what);
// The actor whose handler runs on this thread, or nullptr.
ActorCell* current_cell() noexcept;

}  // namespace mpx::actors::detail

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(mpx::actors::detail::DeliveryBatch)
