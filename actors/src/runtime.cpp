// The per-process actor runtime (see runtime.hpp).
#include "runtime.hpp"

#include <pthread.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <set>
#include <thread>

#include <caf/scheduler/coordinator.hpp>

#include "mpx/detail/demangle.hpp"
#include "mpx/detail/identity.hpp"
#include "mpx/detail/ring.hpp"  // process_alive
#include "mpx/logging.hpp"
#include "mpx/process.hpp"
#include "polling_sharing.hpp"

namespace mpx::actors::detail {

namespace {

using mpx::detail::Deadline;
constexpr auto kSweepInterval = std::chrono::milliseconds(10);
constexpr std::size_t kBatchRecords = 64;  // the gateway takes at most this many records in a row
constexpr std::size_t kFirstBatchRecords = 8;  // a new batch buffer's size (a request is alone in its batch)

// ---- process globals, replaced (leaked) in a forked child: another thread
// of the parent may have held their mutexes at the fork.
struct Globals {
  std::mutex mutex;
  std::unordered_map<std::string, std::shared_ptr<Mailbox>> mailboxes;
  std::atomic<std::uint64_t> mailboxes_generation{0};  // bumped at every change of `mailboxes`
  std::atomic<Endpoint*> endpoint{nullptr};
};
// The process that made the tree: every mailbox name carries its pid, so two
// programs running at once never share a host name.
pid_t g_tree_root = ::getpid();
std::atomic<Globals*> g_globals{new Globals};

Globals& globals() { return *g_globals.load(std::memory_order_acquire); }

[[maybe_unused]] const bool g_atfork_registered = [] {
  ::pthread_atfork(nullptr, nullptr, [] { g_globals.store(new Globals, std::memory_order_release); });
  return true;
}();

thread_local ActorCell* t_current_cell = nullptr;

std::uint64_t envelope_tag(std::span<const std::byte> bytes) {
  if (bytes.size() < sizeof(EnvelopeHeader)) return 0;
  EnvelopeHeader header;
  std::memcpy(&header, bytes.data(), sizeof header);
  return header.magic == envelope_magic ? header.type_tag : 0;
}

// Encodes head + strings into `out`.
void write_head(Bytes& out, PacketKind kind, std::uint8_t flags, std::string_view target_name,
                std::uint64_t target_id, const ActorRef& sender, std::uint64_t request_id,
                std::uint32_t reply_slot = 0) {
  // A sender on another node travels as "host@node" (parse_packet splits it).
  thread_local std::string qualified;
  std::string_view sender_host = sender.host();
  if (!sender.node().empty()) {
    qualified = sender.host() + '@' + sender.node();
    sender_host = qualified;
  }
  PacketHead head{};
  head.magic = kPacketMagic;
  head.kind = kind;
  head.flags = flags;
  head.target_name_len = static_cast<std::uint16_t>(target_name.size());
  head.sender_host_len = static_cast<std::uint16_t>(sender_host.size());
  head.sender_name_len = static_cast<std::uint16_t>(sender.name().size());
  head.sender_pid = static_cast<std::uint32_t>(sender.pid());
  head.target_id = target_id;
  head.sender_id = sender.id();
  head.request_id = request_id;
  head.reply_slot = reply_slot;
  out.resize(sizeof head + target_name.size() + sender_host.size() + sender.name().size());
  std::byte* p = out.data();
  std::memcpy(p, &head, sizeof head);
  p += sizeof head;
  std::memcpy(p, target_name.data(), target_name.size());
  p += target_name.size();
  std::memcpy(p, sender_host.data(), sender_host.size());
  p += sender_host.size();
  std::memcpy(p, sender.name().data(), sender.name().size());
}

std::string exception_type(const std::exception& e) { return mpx::detail::demangle(typeid(e).name()); }

}  // namespace

// ---- names and routing

void check_name(const std::string& name, const char* what) {
  bool ok = !name.empty() && name.size() <= 64;
  for (char c : name)
    ok = ok && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-' ||
                c == '.');
  if (!ok)
    throw ActorError(std::string("mpx actors: ") + what + " '" + name + "' must be 1-64 characters of [A-Za-z0-9_.-]");
}

std::string mailbox_name(const std::string& host) { return "mpx." + std::to_string(g_tree_root) + "." + host; }

void set_tree_root(pid_t root) { g_tree_root = root; }
pid_t tree_root() { return g_tree_root; }

std::shared_ptr<Mailbox> find_mailbox(const std::string& host) {
  Globals& g = globals();
  {
    std::lock_guard lock(g.mutex);
    auto it = g.mailboxes.find(host);
    if (it != g.mailboxes.end() && !it->second->retired()) return it->second;
  }
  std::shared_ptr<Mailbox> opened;
  try {
    opened = Mailbox::open(mailbox_name(host));
  } catch (const FileNotFoundError&) {
    std::lock_guard lock(g.mutex);
    g.mailboxes.erase(host);
    g.mailboxes_generation.fetch_add(1, std::memory_order_release);
    return nullptr;
  }
  if (opened->retired()) return nullptr;
  std::lock_guard lock(g.mutex);
  g.mailboxes[host] = opened;
  g.mailboxes_generation.fetch_add(1, std::memory_order_release);
  return opened;
}

namespace {
// A thread's last route: posting to the same host again (a stream) skips
// the table's mutex and lookup while the table has not changed.
struct RouteCache {
  const Globals* globals = nullptr;
  std::uint64_t generation = 0;
  std::string host;
  std::shared_ptr<Mailbox> mailbox;
};
thread_local RouteCache t_route;

// find_mailbox() through the thread's cache; the mailbox stays valid until
// this thread looks up another host.
Mailbox* route_mailbox(const std::string& host) {
  Globals& g = globals();
  const std::uint64_t generation = g.mailboxes_generation.load(std::memory_order_acquire);
  RouteCache& route = t_route;
  if (route.globals == &g && route.generation == generation && route.mailbox && route.host == host &&
      !route.mailbox->retired())
    return route.mailbox.get();
  route.mailbox = find_mailbox(host);
  route.globals = &g;
  route.generation = generation;  // read before the lookup: a change meanwhile misses next time
  route.host = host;
  return route.mailbox.get();
}
}  // namespace

void remember_mailbox(const std::string& host, std::shared_ptr<Mailbox> mailbox) {
  Globals& g = globals();
  std::lock_guard lock(g.mutex);
  g.mailboxes[host] = std::move(mailbox);
  g.mailboxes_generation.fetch_add(1, std::memory_order_release);
}

std::string route_name(const ActorRef& ref) { return ref.node().empty() ? ref.host() : ref.host() + '@' + ref.node(); }

namespace {
// The record class a packet is put into a mailbox with.
RecordClass record_class_of(PacketKind kind, std::uint64_t request_id) {
  return kind != PacketKind::message ? RecordClass::control
         : request_id != 0           ? RecordClass::request
                                     : RecordClass::message;
}
}  // namespace

void post_packet(const std::string& host, PacketKind kind, std::uint8_t flags, std::string_view target_name,
                 std::uint64_t target_id, const ActorRef& sender, std::uint64_t request_id, const Value& payload,
                 const Deadline& deadline, bool block, std::uint32_t reply_slot) {
  // Apart for the two routes: a packet to another node may, on the way,
  // make this thread post a local one (a node found down fails what waits).
  thread_local Bytes remote_body;
  thread_local Bytes local_body;
  Bytes& body = host.find('@') != std::string::npos ? remote_body : local_body;
  if (payload.object) {
    payload.encode(payload.object, body);
  } else {
    body.clear();
  }
  post_encoded(host, kind, flags, target_name, target_id, sender, request_id, body, deadline, block, reply_slot);
}

void post_encoded(const std::string& host, PacketKind kind, std::uint8_t flags, std::string_view target_name,
                  std::uint64_t target_id, const ActorRef& sender, std::uint64_t request_id,
                  std::span<const std::byte> body, const Deadline& deadline, bool block, std::uint32_t reply_slot) {
  if (const auto at = host.find('@'); at != std::string::npos) {
    // "host@node": an endpoint on another node, through this tree's Node
    // (a reply slot is this machine's only).
    thread_local Bytes head;
    write_head(head, kind, flags, target_name, target_id, sender, request_id);
    forward_to_node(std::string_view(host).substr(at + 1), std::string_view(host).substr(0, at), head, body,
                    deadline, block);
    return;
  }
  Mailbox* mailbox = route_mailbox(host);
  if (!mailbox) throw ActorDown("mpx actors: there is no host named '" + host + "'", "noproc");
  thread_local Bytes head;
  write_head(head, kind, flags, target_name, target_id, sender, request_id, reply_slot);
  if (!mailbox->put(head, body, deadline, block, record_class_of(kind, request_id))) {
    const char* policy = mailbox->policy() == MailboxPolicy::fail ? "fail" : "block";
    throw MailboxFull("mpx actors: the mailbox of host '" + host + "' is full (" + std::to_string(mailbox->depth()) +
                      " messages waiting, capacity " + std::to_string(mailbox->capacity()) + ", policy " + policy +
                      ")");
  }
}

Packet parse_packet(std::span<const std::byte> bytes, bool sender) {
  PacketHead head;
  if (bytes.size() < sizeof head) throw ActorError("mpx actors: a mailbox record too short for a packet");
  std::memcpy(&head, bytes.data(), sizeof head);
  const std::size_t strings = std::size_t{head.target_name_len} + head.sender_host_len + head.sender_name_len;
  if (head.magic != kPacketMagic || bytes.size() < sizeof head + strings)
    throw ActorError("mpx actors: a mailbox record that is not a packet");
  const char* p = reinterpret_cast<const char*>(bytes.data()) + sizeof head;
  Packet packet;
  packet.kind = head.kind;
  packet.flags = head.flags;
  packet.target_name = std::string_view(p, head.target_name_len);
  p += head.target_name_len;
  std::string_view host(p, head.sender_host_len);
  p += head.sender_host_len;
  packet.target_id = head.target_id;
  if (sender) {
    std::string name(p, head.sender_name_len);
    if (const auto at = host.find('@'); at != std::string_view::npos) {
      packet.sender = ActorRef(std::string(host.substr(at + 1)), std::string(host.substr(0, at)), std::move(name),
                               head.sender_id, static_cast<pid_t>(head.sender_pid));
    } else {
      packet.sender = ActorRef(std::string(host), std::move(name), head.sender_id, static_cast<pid_t>(head.sender_pid));
    }
  }
  packet.request_id = head.request_id;
  packet.reply_slot = head.reply_slot;
  packet.payload = bytes.subspan(sizeof head + strings);
  return packet;
}

ActorRef packet_sender(std::span<const std::byte> bytes) { return parse_packet(bytes).sender; }

// ---- the tree's node (set once by the Node, inherited by the hosts it starts)

namespace {
std::atomic<const std::string*> g_local_node{nullptr};  // leaked: read by any thread, any time
std::atomic<std::size_t> g_node_max_message{0};
}  // namespace

const std::string& local_node_name() noexcept {
  static const std::string none;
  const std::string* name = g_local_node.load(std::memory_order_acquire);
  return name ? *name : none;
}

void localize_node(std::string& node) noexcept {
  if (!node.empty() && node == local_node_name()) node.clear();
}

void set_local_node(const std::string& name, std::size_t max_message_size) {
  // Every name stays allocated (a reader may still hold an older one) and
  // reachable from here, so that LeakSanitizer does not report it.
  static std::mutex kept_mutex;
  static auto* kept = new std::vector<std::unique_ptr<const std::string>>;
  auto owned = std::make_unique<const std::string>(name);
  std::lock_guard lock(kept_mutex);
  g_local_node.store(owned.get(), std::memory_order_release);
  kept->push_back(std::move(owned));
  g_node_max_message.store(max_message_size, std::memory_order_release);
}

std::size_t local_node_max_message() noexcept { return g_node_max_message.load(std::memory_order_acquire); }

std::string node_mailbox_host(const std::string& name) { return "@" + name; }

bool post_from_node(const std::string& host, std::span<const std::byte> packet, const std::string& peer,
                    const Deadline& deadline, bool wait) {
  Packet parsed = parse_packet(packet);
  ActorRef sender(peer, parsed.sender.host(), parsed.sender.name(), parsed.sender.id(), parsed.sender.pid());
  auto mailbox = host.empty() || host.front() == '@' ? nullptr : find_mailbox(host);
  if (!mailbox) {
    if (!wait) return false;  // the answer below may wait for room
    // Answer what waits for an answer, so that the peer does not wait for its timeout.
    const std::string why = "noproc: there is no host named '" + host + "' on node '" + local_node_name() + "'";
    if ((parsed.kind == PacketKind::message && parsed.request_id) || parsed.kind == PacketKind::spawn) {
      ErrorInfo info{"down", "", "mpx actors: " + why, "noproc"};
      post_packet(route_name(sender), PacketKind::error, 0, "", 0, ActorRef(host, "", 0, 0), parsed.request_id,
                  borrow_value(info), deadline, true);
    } else if (parsed.kind == PacketKind::monitor) {
      Down down{ActorRef(host, std::string(parsed.target_name), parsed.target_id, 0), DownKind::noproc, why, {}};
      post_packet(route_name(sender), PacketKind::down, 0, "", 0, ActorRef(host, "", 0, 0), parsed.request_id,
                  borrow_value(down), deadline, true);
    } else {
      get_logger()->debug("mpx nodes: a packet from node {} to host {} dropped: {}", peer, host, why);
    }
    return true;
  }
  // The sender as this node sees it: "host@peer" (whatever the peer wrote).
  thread_local Bytes head;
  write_head(head, parsed.kind, parsed.flags, parsed.target_name, parsed.target_id, sender, parsed.request_id);
  if (!mailbox->put(head, parsed.payload, deadline, wait, record_class_of(parsed.kind, parsed.request_id))) {
    if (!wait) return false;
    throw MailboxFull("mpx nodes: the mailbox of host '" + host + "' is full; a packet from node '" + peer +
                      "' dropped");
  }
  return true;
}

ActorCell* current_cell() noexcept { return t_current_cell; }

const ActorRef& current_sender() {
  if (t_current_cell) return t_current_cell->ref;
  // This process as a sender: built once per thread and process (the pid
  // changes in a forked child; the endpoint appears on first use).
  thread_local ActorRef cached;
  thread_local const Endpoint* cached_for = nullptr;
  const pid_t pid = mpx::detail::current_pid();
  Endpoint* endpoint = Endpoint::existing();
  if (cached.pid() != pid || cached_for != endpoint) {
    std::string name = endpoint ? endpoint->name() : "p" + std::to_string(pid);
    cached = ActorRef(std::move(name), "", 0, pid);
    cached_for = endpoint;
  }
  return cached;
}

bool host_not_serving(const Mailbox& mailbox, std::uint32_t incarnation) {
  return mailbox.retired() || mailbox.host_state() != HostState::running || mailbox.incarnation() != incarnation;
}

bool host_gone(const Mailbox& mailbox, std::uint32_t incarnation, pid_t pid) {
  return host_not_serving(mailbox, incarnation) || !mpx::detail::process_alive(pid);
}

std::string describe_host_gone(const Mailbox& mailbox, const std::string& host) {
  if (mailbox.retired()) return "host '" + host + "' was shut down";
  switch (mailbox.host_state()) {
    case HostState::never_started: return "host '" + host + "' is not running (never started)";
    case HostState::stopped: return "host '" + host + "' is not running (stopped)";
    default: break;
  }
  auto code = mailbox.exit_code();
  return "host '" + host + "' died" + (code ? " (exit code " + std::to_string(*code) + ")" : std::string());
}

[[noreturn]] void throw_error_info(const ErrorInfo& info) {
  if (info.kind == "down") throw ActorDown(info.message, info.reason);
  if (info.kind == "nodedown") throw NodeDown(info.message, info.reason);
  if (info.kind == "remote") throw RemoteError(info.type, info.message);
  if (info.kind == "unhandled") throw Unhandled(info.message);
  if (info.kind == "error" && info.type == "mpx::actors::UnknownActorType") throw UnknownActorType(info.message);
  throw ActorError(info.message);
}

[[noreturn]] void throw_reply_type_mismatch(std::string_view expected, std::string_view got) {
  throw ActorError("mpx actors: the reply is a " + std::string(got) + ", the request expected " +
                   std::string(expected));
}

// ---- requests

ErrorInfo decode_error_reply(std::span<const std::byte> payload) {
  try {
    return mpx::decode<ErrorInfo>(payload);
  } catch (const mpx::Error& e) {
    return ErrorInfo{"error", "", std::string("mpx actors: undecodable error reply: ") + e.what(), ""};
  }
}

bool PendingRequest::owns_slot() const noexcept { return slot != 0 && slot_pid == mpx::detail::current_pid(); }

PendingRequest::~PendingRequest() {
  if (!owns_slot()) return;  // none, or a forked child's copy: the slot is the parent's
  if (slot_held.exchange(false, std::memory_order_acq_rel)) slot_mailbox->release_reply_slot(slot - 1, id);
  if (Endpoint* endpoint = Endpoint::existing()) endpoint->forget_pending(id);  // its weak entry
}

void fulfil(const std::shared_ptr<PendingRequest>& pending, Value local, Bytes encoded, std::optional<ErrorInfo> error) {
  std::shared_ptr<ActorCell> owner;
  std::function<void()> continuation;
  bool wake_slot = false;
  {
    std::lock_guard lock(pending->mutex);
    if (pending->done) return;
    pending->local = std::move(local);
    pending->encoded = std::move(encoded);
    pending->error = std::move(error);
    pending->done = true;
    pending->done_flag.store(true, std::memory_order_release);
    wake_slot = pending->slot != 0 && pending->slot_held.load(std::memory_order_acquire);
    if (pending->owner && pending->continuation && !pending->continuation_posted) {
      pending->continuation_posted = true;
      owner = pending->owner;
      continuation = pending->continuation;
    }
  }
  pending->cv.notify_all();
  if (wake_slot) pending->slot_mailbox->wake_reply_slot(pending->slot - 1);  // a waiter asleep on its slot
  if (Endpoint* endpoint = Endpoint::existing()) endpoint->forget_pending(pending->id);
  if (owner) {
    Delivery delivery;
    delivery.kind = Delivery::Kind::continuation;
    delivery.cell = owner;
    delivery.run = std::move(continuation);
    (void)Endpoint::instance().enqueue(owner, std::move(delivery));
  }
}

namespace {
// True once the request is done, settling it from its slot first: a filled
// slot's reply becomes the outcome (it wins over an error the sweep set: a
// reply the host wrote before it died); once done either way the slot is
// released, so the outcome never changes after a waiter saw it. Any thread.
bool settle_from_slot(PendingRequest& pending) {
  Mailbox& mailbox = *pending.slot_mailbox;
  const std::uint32_t index = pending.slot - 1;
  if (!pending.done_flag.load(std::memory_order_acquire) && !mailbox.filled_reply_slot(index, pending.id))
    return false;
  {
    std::lock_guard lock(pending.mutex);
    if (!pending.slot_held.load(std::memory_order_acquire)) return pending.done;
    if (auto reply = mailbox.filled_reply_slot(index, pending.id)) {
      pending.local = Value{};
      pending.encoded.clear();
      pending.error.reset();
      if (reply->kind == static_cast<std::uint8_t>(PacketKind::error)) {
        pending.error = decode_error_reply(reply->bytes);
      } else {
        pending.encoded.assign(reply->bytes.begin(), reply->bytes.end());
      }
      pending.done = true;
      pending.done_flag.store(true, std::memory_order_release);
    } else if (!pending.done) {
      return false;
    }
    pending.slot_held.store(false, std::memory_order_release);
    mailbox.release_reply_slot(index, pending.id);
  }
  if (Endpoint* endpoint = Endpoint::existing()) endpoint->forget_pending(pending.id);
  return true;
}

// wait_pending for a request whose reply comes into a slot (or, too large
// for one, by the log; or fails in this process: both set done_flag).
bool wait_pending_slot(PendingRequest& pending, const Deadline& deadline) {
  Mailbox& mailbox = *pending.slot_mailbox;
  const std::uint32_t index = pending.slot - 1;
  const auto spin_until = std::chrono::steady_clock::now() + std::chrono::microseconds(50);
  for (;;) {
    if (settle_from_slot(pending)) return true;
    if (deadline.expired()) return false;
    if (std::chrono::steady_clock::now() < spin_until) {
      std::this_thread::yield();
      continue;
    }
    const std::uint32_t seq = mailbox.reply_slot_seq(index);
    if (mailbox.filled_reply_slot(index, pending.id) || pending.done_flag.load(std::memory_order_acquire)) continue;
    mailbox.wait_reply_slot(index, seq, deadline);
  }
}
}  // namespace

bool wait_pending(PendingRequest& pending, const Deadline& deadline) {
  if (pending.owns_slot()) return wait_pending_slot(pending, deadline);
  // Replies from this machine often come within tens of microseconds: a
  // short spin saves the sleep and the wake-up when a CPU is free. Not for
  // another node: its replies take 100 us or more, and the spin only takes
  // a CPU from the threads that carry the request (measured: nodes_bench's
  // round trip 0.68-0.86x raw CAF with it, 0.76-1.00x without, 2 vCPUs).
  const auto spin_until = std::chrono::steady_clock::now() + (pending.spin ? std::chrono::microseconds(50)
                                                                           : std::chrono::microseconds(0));
  while (!pending.done_flag.load(std::memory_order_acquire) && std::chrono::steady_clock::now() < spin_until &&
         !deadline.expired())
    std::this_thread::yield();
  std::unique_lock lock(pending.mutex);
  while (!pending.done) {
    auto left = deadline.remaining();
    if (!left) {
      pending.cv.wait(lock);
    } else {
      if (left->count() == 0) return false;
      pending.cv.wait_for(lock, *left);
    }
  }
  return true;
}

ReplyView pending_result(PendingRequest& pending) {
  std::lock_guard lock(pending.mutex);
  if (pending.error) throw_error_info(*pending.error);
  ReplyView view;
  if (pending.local.object) {
    view.local = &pending.local;
  } else {
    view.encoded = pending.encoded;
  }
  return view;
}

void set_continuation(PendingRequest& pending, std::function<void()> continuation) {
  std::shared_ptr<ActorCell> owner;
  {
    std::lock_guard lock(pending.mutex);
    if (!pending.owner) throw ActorError("mpx actors: Response::then() is for code running inside an actor");
    pending.continuation = std::move(continuation);
    if (!pending.done || pending.continuation_posted) return;
    pending.continuation_posted = true;
    owner = pending.owner;
  }
  Delivery delivery;
  delivery.kind = Delivery::Kind::continuation;
  delivery.cell = owner;
  delivery.run = pending.continuation;
  (void)Endpoint::instance().enqueue(owner, std::move(delivery));
}

namespace {
// A reply or an error to another process: into the requester's reply slot
// when it has one on this machine and the bytes fit, else by its log.
void post_answer(const ReplyTarget& target, PacketKind kind, const Value& value) {
  thread_local Bytes bytes;
  value.encode(value.object, bytes);
  if (target.reply_slot != 0 && target.endpoint.find('@') == std::string::npos) {
    auto mailbox = find_mailbox(target.endpoint);
    if (mailbox &&
        mailbox->fill_reply_slot(target.reply_slot - 1, target.request_id, static_cast<std::uint8_t>(kind), bytes))
      return;
  }
  post_encoded(target.endpoint, kind, 0, "", 0, current_sender(), target.request_id, bytes, Deadline::never(), true);
}
}  // namespace

void deliver_reply(const std::shared_ptr<ReplyTarget>& target, const Value& reply) {
  static const Unit unit;
  const Value value = reply.object ? reply : borrow_value(unit);
  if (target->local) {
    fulfil(target->local, value.owned(), {}, std::nullopt);
    return;
  }
  try {
    post_answer(*target, PacketKind::reply, value);
  } catch (const ActorError& e) {
    get_logger()->debug("mpx actors: reply to {} dropped: {}", target->endpoint, e.what());
  }
}

namespace {
// Fails a request: in this process directly, else as an error packet.
void send_error(const std::shared_ptr<ReplyTarget>& target, ErrorInfo info) {
  if (target->local) {
    fulfil(target->local, {}, {}, std::move(info));
    return;
  }
  try {
    post_answer(*target, PacketKind::error, borrow_value(info));
  } catch (const ActorError& e) {
    get_logger()->debug("mpx actors: error reply to {} dropped: {}", target->endpoint, e.what());
  }
}

void deliver_down_error(const std::shared_ptr<ReplyTarget>& target, const std::string& message,
                        const std::string& reason) {
  send_error(target, ErrorInfo{"down", "", message, reason});
}
}  // namespace

void deliver_error(const std::shared_ptr<ReplyTarget>& target, const std::string& kind, const std::string& type,
                   const std::string& message) {
  send_error(target, ErrorInfo{kind, type, message, kind == "down" ? message : std::string()});
}

// Registers `monitor` as a watcher of its target, wherever the target lives.
void watch(Endpoint& endpoint, const std::shared_ptr<MonitorState>& monitor, std::uint8_t flags) {
  const ActorRef& target = monitor->target;
  if (!target.node().empty()) {
    // Another node: its Node fires a node-down Down if the node is lost.
    ActorRef watcher(endpoint.name(), "", 0, ::getpid());
    try {
      post_packet(route_name(target), PacketKind::monitor, flags, target.name(), target.id(), watcher, monitor->id,
                  Value{}, Deadline::never(), true);
    } catch (const ActorDown& e) {
      endpoint.fire_monitor(monitor, Down{target, DownKind::node_down, e.reason() + ": " + e.what(), {}});
    }
    return;
  }
  if (target.host() == endpoint.name()) {
    endpoint.add_watcher(target, Watcher{endpoint.name(), monitor->id, monitor->link, monitor});
    return;
  }
  auto mailbox = find_mailbox(target.host());
  if (!mailbox) {
    endpoint.fire_monitor(monitor, Down{target, DownKind::noproc, "noproc: there is no host named '" + target.host() + "'", {}});
    return;
  }
  std::uint32_t incarnation = mailbox->incarnation();
  pid_t pid = mailbox->consumer_pid();
  {
    std::lock_guard lock(monitor->mutex);
    monitor->target_mailbox = mailbox;
    monitor->target_incarnation = incarnation;
    monitor->target_pid = pid;
  }
  endpoint.watch_death(pid);
  if (host_gone(*mailbox, incarnation, pid)) {
    endpoint.fire_monitor(monitor, Down{target, DownKind::host_died, describe_host_gone(*mailbox, target.host()),
                                        mailbox->exit_code()});
    return;
  }
  ActorRef watcher(endpoint.name(), "", 0, ::getpid());
  post_packet(target.host(), PacketKind::monitor, flags, target.name(), target.id(), watcher, monitor->id, Value{},
              Deadline::never(), true);
}

// ---- public entry points of actor_ref.hpp / monitor.hpp / context.hpp

void send_value(const ActorRef& to, const Value& message, const Deadline& deadline, bool block) {
  if (!to.valid()) throw ActorError("mpx actors: send to an empty ActorRef");
  if (!to.node().empty()) {
    post_packet(route_name(to), PacketKind::message, 0, to.name(), to.id(), current_sender(), 0, message, deadline,
                block);
    return;
  }
  Endpoint* endpoint = Endpoint::existing();
  if (endpoint && to.host() == endpoint->name()) {
    auto cell = endpoint->find_local(to.name(), to.id());
    if (!cell) {
      get_logger()->debug("mpx actors: message to {} dropped: no such actor", to.to_string());
      return;
    }
    Delivery delivery;
    delivery.cell = cell;
    delivery.value = message.owned();
    delivery.sender = current_sender();
    (void)endpoint->enqueue(cell, std::move(delivery));
    return;
  }
  post_packet(to.host(), PacketKind::message, 0, to.name(), to.id(), current_sender(), 0, message, deadline, block);
}

std::shared_ptr<PendingRequest> request_value(const ActorRef& to, const Value& message) {
  if (!to.valid()) throw ActorError("mpx actors: request to an empty ActorRef");
  Endpoint& endpoint = Endpoint::instance();
  std::shared_ptr<ActorCell> owner = t_current_cell ? t_current_cell->shared_from_this() : nullptr;
  auto pending = endpoint.new_pending(owner);
  pending->target_host = to.host();
  auto target = std::make_shared<ReplyTarget>(ReplyTarget{endpoint.name(), pending->id, pending});
  if (!to.node().empty()) {
    // Another node: the Node fails the request with NodeDown when that node
    // is (or goes) down; the request is then forgotten here.
    pending->spin = false;
    try {
      post_packet(route_name(to), PacketKind::message, 0, to.name(), to.id(), current_sender(), pending->id, message,
                  Deadline::never(), true);
    } catch (...) {
      endpoint.forget_pending(pending->id);
      throw;
    }
    return pending;
  }
  if (to.host() == endpoint.name()) {
    auto cell = endpoint.find_local(to.name(), to.id());
    if (!cell) {
      deliver_down_error(target, "mpx actors: " + to.to_string() + " is not running (noproc)", "noproc");
      return pending;
    }
    Delivery delivery;
    delivery.cell = cell;
    delivery.value = message.owned();
    delivery.sender = current_sender();
    delivery.reply = target;
    (void)endpoint.enqueue(cell, std::move(delivery));  // a stopped cell fails it (~Delivery)
    return pending;
  }
  auto mailbox = find_mailbox(to.host());
  if (!mailbox) {
    deliver_down_error(target, "mpx actors: there is no host named '" + to.host() + "'", "noproc");
    return pending;
  }
  const std::uint32_t incarnation = mailbox->incarnation();
  const pid_t pid = mailbox->consumer_pid();
  {
    std::lock_guard lock(pending->mutex);
    pending->target_mailbox = mailbox;
    pending->target_incarnation = incarnation;
    pending->target_pid = pid;
    // Plain code waits for the reply in a slot of our mailbox, past our
    // gateway (an actor's request continues through its own mailbox).
    if (!owner) {
      if (auto index = endpoint.mailbox()->lease_reply_slot(pending->id)) {
        pending->slot_mailbox = endpoint.mailbox();
        pending->slot = *index + 1;
        pending->slot_pid = mpx::detail::current_pid();
      }
    }
  }
  if (pending->slot != 0) endpoint.hold_pending_weakly(pending->id);
  // The mailbox's own word only (no /proc read per request): a death not
  // yet recorded there is found by the gateway's sweep as soon as the death
  // watch sees the pid exit (10 ms at worst).
  if (host_not_serving(*mailbox, incarnation)) {
    std::string why = describe_host_gone(*mailbox, to.host());
    deliver_down_error(target, "mpx actors: request to " + to.to_string() + " failed: " + why, why);
    return pending;
  }
  // Only now: watching a pid that is already gone wakes the gateway for a
  // sweep, which a client retrying a dead host would do at every attempt.
  endpoint.watch_death(pid);
  try {
    post_packet(to.host(), PacketKind::message, 0, to.name(), to.id(), current_sender(), pending->id, message,
                Deadline::never(), true, pending->slot);
  } catch (...) {
    endpoint.forget_pending(pending->id);
    throw;
  }
  return pending;
}

void kill_actor(const ActorRef& target) {
  if (!target.valid()) throw ActorError("mpx actors: kill of an empty ActorRef");
  Endpoint* endpoint = Endpoint::existing();
  if (endpoint && target.node().empty() && target.host() == endpoint->name()) {
    if (auto cell = endpoint->find_local(target.name(), target.id()))
      caf::anon_send_exit(cell->actor, caf::exit_reason::kill);
    return;
  }
  post_packet(route_name(target), PacketKind::kill, 0, target.name(), target.id(), current_sender(), 0, Value{},
              Deadline::never(), true);
}

std::optional<Down> wait_monitor(MonitorState& state, const Deadline& deadline) {
  std::unique_lock lock(state.mutex);
  while (!state.down) {
    auto left = deadline.remaining();
    if (!left) {
      state.cv.wait(lock);
    } else {
      if (left->count() == 0) return std::nullopt;
      state.cv.wait_for(lock, *left);
    }
  }
  return state.down;
}

std::shared_ptr<ReplyTarget> take_reply_target(ActorCell& cell) { return std::exchange(cell.current_reply, nullptr); }

// ---- Endpoint

Endpoint* Endpoint::existing() noexcept { return globals().endpoint.load(std::memory_order_acquire); }

Endpoint& Endpoint::instance() {
  Globals& g = globals();
  if (Endpoint* e = g.endpoint.load(std::memory_order_acquire)) return *e;
  std::lock_guard lock(g.mutex);
  if (Endpoint* e = g.endpoint.load(std::memory_order_acquire)) return *e;
  std::string name = "p" + std::to_string(::getpid());
  auto mailbox = Mailbox::create(mailbox_name(name), MailboxOptions{});
  mailbox->attach_consumer();
  g.mailboxes[name] = mailbox;
  g.mailboxes_generation.fetch_add(1, std::memory_order_release);
  // Never destroyed: the gateway is stopped at exit, the object leaks, so
  // nothing runs after main's statics are gone.
  auto* endpoint = new Endpoint(name, mailbox, 0);
  g.endpoint.store(endpoint, std::memory_order_release);
  endpoint->gateway_ = std::thread([endpoint] { endpoint->run_gateway(); });
  std::atexit([] {
    if (Endpoint* e = Endpoint::existing()) {
      e->stop_gateway();
      if (e->system_) e->stop_all_actors(std::chrono::milliseconds(2000));
    }
  });
  return *endpoint;
}

Endpoint& Endpoint::make_host(const std::string& name, std::shared_ptr<Mailbox> mailbox, unsigned threads) {
  Globals& g = globals();
  std::lock_guard lock(g.mutex);
  g.mailboxes[name] = mailbox;
  g.mailboxes_generation.fetch_add(1, std::memory_order_release);
  auto* endpoint = new Endpoint(name, std::move(mailbox), threads);
  g.endpoint.store(endpoint, std::memory_order_release);
  return *endpoint;
}

Endpoint::Endpoint(std::string name, std::shared_ptr<Mailbox> mailbox, unsigned threads)
    : name_(std::move(name)),
      mailbox_(std::move(mailbox)),
      threads_(threads),
      death_watch_([this] {
        sweep_now_.store(true, std::memory_order_seq_cst);
        mailbox_->interrupt_consumer();
      }) {}

void Endpoint::watch_death(pid_t pid) { death_watch_.watch(pid); }

caf::actor_system& Endpoint::system() {
  std::call_once(system_once_, [this] {
    config_ = std::make_unique<caf::actor_system_config>();
    unsigned threads = threads_ ? threads_ : std::min(4u, static_cast<unsigned>(std::max(1, mpx::cpu_count())));
    config_->set("scheduler.max-threads", threads);
    // CAF 0.17's default work-stealing workers poll with sleeps once idle
    // (10 ms in relaxed mode): a message from the gateway could wait that
    // long. A shared queue whose idle worker polls briefly, then waits on a
    // condition variable (polling_sharing.hpp).
    config_->load<caf::scheduler::coordinator<detail::polling_sharing>>();
    system_ = std::make_unique<caf::actor_system>(*config_);
  });
  return *system_;
}

namespace {

// The records a batch's handlers finished are reclaimed, and counted off
// the gateway's in-flight bound, once at the end of the batch instead of
// per message (the actor's thread, which a stream keeps busy, took a lock
// and two shared counters per message for it).
struct BatchCompletions {
  Mailbox* mailbox = nullptr;
  std::size_t finished = 0;
};
thread_local BatchCompletions* t_batch_completions = nullptr;

class BatchCompletionScope {
 public:
  explicit BatchCompletionScope(Mailbox* mailbox) : prev_(t_batch_completions) {
    own_.mailbox = mailbox;
    t_batch_completions = &own_;
  }
  ~BatchCompletionScope() {
    t_batch_completions = prev_;
    if (own_.finished == 0) return;
    own_.mailbox->reclaim_done();
    if (Endpoint* endpoint = Endpoint::existing()) endpoint->record_finished(own_.finished);
  }
  BatchCompletionScope(const BatchCompletionScope&) = delete;
  BatchCompletionScope& operator=(const BatchCompletionScope&) = delete;

 private:
  BatchCompletions own_;
  BatchCompletions* prev_;
};

void finish_record(const Delivery& d) {
  if (d.direct) {
    if (Endpoint* endpoint = Endpoint::existing()) endpoint->direct_finished();
    return;
  }
  if (!d.mailbox) return;
  if (BatchCompletions* batch = t_batch_completions; batch && batch->mailbox == d.mailbox) {
    d.mailbox->mark_done(d.record_pos);
    ++batch->finished;
    return;
  }
  d.mailbox->complete(d.record_pos);
  if (Endpoint* endpoint = Endpoint::existing()) endpoint->record_finished();
}

void stop_cell(caf::event_based_actor* self, ActorCell& cell, DownKind kind, std::string reason,
               caf::exit_reason how) {
  {
    std::lock_guard lock(cell.mutex);
    cell.stop_kind = kind;
    cell.stop_reason = std::move(reason);
  }
  cell.quitting = true;
  self->quit(how);
}

}  // namespace

Delivery::~Delivery() {
  if (handled || kind != Kind::message) return;
  try {
    finish_record(*this);
    if (reply) {
      std::string reason = "noproc";
      std::string who = "the actor";
      if (cell) {
        who = cell->ref.to_string();
        std::lock_guard lock(cell->mutex);
        if (!cell->stop_reason.empty()) reason = cell->stop_reason;
      }
      deliver_down_error(reply, "mpx actors: " + who + " stopped before handling the request: " + reason, reason);
    }
  } catch (...) {
    // A destructor: the requester's sweep or timeout covers what could not be sent.
  }
}

namespace {

void handle_message(caf::event_based_actor* self, ActorCell& cell, Delivery& d) {
  d.handled = true;
  if (d.mailbox) d.mailbox->mark_handling(d.record_pos);
  const std::uint64_t tag = d.value.object ? d.value.tag : envelope_tag(d.bytes);
  if (tag == mpx::type_tag<PoisonPill>()) {
    if (d.reply) deliver_reply(d.reply, Value{});
    finish_record(d);
    stop_cell(self, cell, DownKind::normal, "normal", caf::exit_reason::normal);
    return;
  }
  const Handler* handler = cell.instance.behavior.find(tag);
  if (!handler) {
    std::string type = d.value.object ? std::string(d.value.type_name) : "tag " + std::to_string(tag);
    get_logger()->warn("mpx actors: {} has no handler for a message of type {}; dropped", cell.ref.to_string(), type);
    if (d.reply)
      deliver_error(d.reply, "unhandled", type, "mpx actors: " + cell.ref.to_string() + " has no handler for " + type);
    finish_record(d);
    return;
  }
  t_current_cell = &cell;
  set_thread_log_label(&cell.log_label);
  cell.current = &d;
  cell.current_reply = d.reply;
  bool crashed = false;
  std::string crash_reason;
  try {
    Outcome outcome = d.value.object ? handler->call(d.value.object) : handler->call_bytes(d.bytes);
    if (cell.current_reply && !outcome.deferred) deliver_reply(cell.current_reply, outcome.reply);
  } catch (const DecodeFailure& e) {
    // Bad input, not a crash of the actor: the message is dropped.
    get_logger()->error("mpx actors: {} got a message it cannot decode: {}", cell.ref.to_string(), e.what);
    if (cell.current_reply) deliver_error(cell.current_reply, "error", "mpx::DecodeError", e.what);
  } catch (const std::exception& e) {
    crashed = true;
    const std::string type = exception_type(e);
    crash_reason = "exception: " + type + ": " + e.what();
    if (cell.current_reply) deliver_error(cell.current_reply, "remote", type, e.what());
  } catch (...) {
    crashed = true;
    crash_reason = "exception: " + mpx::detail::current_exception_type();
    if (cell.current_reply) deliver_error(cell.current_reply, "remote", mpx::detail::current_exception_type(), "");
  }
  t_current_cell = nullptr;
  set_thread_log_label(nullptr);
  cell.current = nullptr;
  cell.current_reply = nullptr;
  finish_record(d);
  if (crashed) {
    get_logger()->error("mpx actors: {} stopped: {}", cell.ref.to_string(), crash_reason);
    stop_cell(self, cell, DownKind::exception, crash_reason, caf::exit_reason::unhandled_exception);
  } else if (cell.stop_requested) {
    stop_cell(self, cell, DownKind::normal, "normal", caf::exit_reason::normal);
  }
}

caf::behavior cell_actor(caf::event_based_actor* self, std::shared_ptr<ActorCell> cell) {
  self->set_default_handler(caf::drop);
  self->attach_functor([cell](const caf::error& reason) {
    DownKind kind;
    std::string text;
    {
      std::lock_guard lock(cell->mutex);
      kind = cell->stop_kind;
      text = cell->stop_reason;
    }
    if (reason == caf::exit_reason::kill) {
      kind = DownKind::killed;
      text = "killed";
    } else if (text.empty()) {
      text = "normal";
    }
    if (Endpoint* endpoint = Endpoint::existing()) endpoint->on_cell_stopped(cell, kind, std::move(text));
  });
  return {[self, cell](const DeliveryBatch& batch) {
    Endpoint* endpoint = Endpoint::existing();
    BatchCompletionScope completions(endpoint ? endpoint->mailbox().get() : nullptr);
    for (Delivery& d : *batch.items) {
      if (cell->quitting) return;  // the rest is destroyed unhandled: records completed, requests failed
      switch (d.kind) {
        case Delivery::Kind::continuation:
          t_current_cell = cell.get();
          set_thread_log_label(&cell->log_label);
          try {
            d.run();
          } catch (const std::exception& e) {
            t_current_cell = nullptr;
            set_thread_log_label(nullptr);
            std::string why = "exception: " + exception_type(e) + ": " + e.what();
            get_logger()->error("mpx actors: {} stopped: {}", cell->ref.to_string(), why);
            stop_cell(self, *cell, DownKind::exception, why, caf::exit_reason::unhandled_exception);
            return;
          }
          t_current_cell = nullptr;
          set_thread_log_label(nullptr);
          if (cell->stop_requested) stop_cell(self, *cell, DownKind::normal, "normal", caf::exit_reason::normal);
          break;
        case Delivery::Kind::down:
          stop_cell(self, *cell, DownKind::linked, "linked: " + d.monitor->down->reason,
                    caf::exit_reason::user_shutdown);
          return;
        case Delivery::Kind::message:
          handle_message(self, *cell, d);
          break;
      }
    }
  }};
}

}  // namespace

ActorRef Endpoint::spawn_local(const std::string& type, const std::string& name, std::uint64_t args_tag,
                               std::span<const std::byte> args) {
  const ActorType& actor_type = check_spawn(type, args_tag, "");
  if (!name.empty()) {
    check_name(name, "actor name");
    std::lock_guard lock(mutex_);
    if (by_name_.count(name))
      throw ActorError("mpx actors: an actor named '" + name + "' already runs in host '" + name_ + "'");
  }
  auto cell = std::make_shared<ActorCell>();
  std::uint64_t id;
  {
    std::lock_guard lock(mutex_);
    id = (std::uint64_t{mailbox_->incarnation()} << 32) | next_id_++;
  }
  cell->ref = ActorRef(name_, name, name.empty() ? id : 0, ::getpid());
  cell->log_label = name.empty() ? "#" + std::to_string(id & 0xffffffffu) : name;
  cell->type = type;
  cell->context = std::make_unique<Context>(*cell);
  try {
    cell->instance = actor_type.make(*cell->context, args);
  } catch (const std::exception& e) {
    throw ActorError("mpx actors: building actor '" + type + "' failed: " + exception_type(e) + ": " + e.what());
  }
  cell->actor = system().spawn(cell_actor, cell);
  {
    std::lock_guard lock(mutex_);
    if (!name.empty()) {
      if (by_name_.count(name)) {
        caf::anon_send_exit(cell->actor, caf::exit_reason::kill);
        throw ActorError("mpx actors: an actor named '" + name + "' already runs in host '" + name_ + "'");
      }
      by_name_[name] = cell;
    }
    by_id_[id] = cell;
    cells_generation_.fetch_add(1, std::memory_order_release);
  }
  get_logger()->debug("mpx actors: spawned {} ({})", cell->ref.to_string(), type);
  return cell->ref;
}

std::shared_ptr<ActorCell> Endpoint::find_local(std::string_view name, std::uint64_t id) {
  std::lock_guard lock(mutex_);
  if (!name.empty()) {
    auto it = by_name_.find(std::string(name));
    return it == by_name_.end() ? nullptr : it->second;
  }
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : it->second;
}

std::vector<std::shared_ptr<ActorCell>> Endpoint::cells() {
  std::lock_guard lock(mutex_);
  std::vector<std::shared_ptr<ActorCell>> out;
  for (auto& [id, cell] : by_id_) out.push_back(cell);
  return out;
}

bool Endpoint::enqueue(const std::shared_ptr<ActorCell>& cell, Delivery delivery) {
  std::vector<Delivery> one;
  one.push_back(std::move(delivery));
  return enqueue(cell, std::move(one));
}

bool Endpoint::enqueue(const std::shared_ptr<ActorCell>& cell, std::vector<Delivery> deliveries) {
  {
    std::lock_guard lock(cell->mutex);
    if (cell->stopped) return false;
  }
  std::shared_ptr<std::vector<Delivery>> items(new std::vector<Delivery>(std::move(deliveries)),
                                               [this](std::vector<Delivery>* v) {
                                                 recycle_batch(*v);
                                                 delete v;
                                               });
  caf::anon_send(cell->actor, DeliveryBatch{std::move(items)});
  return true;
}

void Endpoint::recycle_batch(std::vector<Delivery>& items) noexcept {
  items.clear();  // what was not handled completes its record, fails its request (~Delivery)
  if (items.capacity() < kFirstBatchRecords) return;  // not one of the gateway's (a local delivery's)
  std::lock_guard lock(spare_batches_mutex_);
  if (spare_batches_.size() >= 8) return;
  try {
    spare_batches_.push_back(std::move(items));
  } catch (const std::bad_alloc&) {
  }
}

void Endpoint::add_watcher(const ActorRef& target, Watcher watcher) {
  auto cell = find_local(target.name(), target.id());
  if (cell) {
    std::lock_guard lock(cell->mutex);
    if (!cell->stopped) {
      cell->watchers.push_back(std::move(watcher));
      return;
    }
  }
  Down down{target, DownKind::noproc, "noproc: " + target.to_string() + " is not running", {}};
  if (watcher.local) {
    fire_monitor(watcher.local, std::move(down));
    return;
  }
  try {
    post_packet(watcher.endpoint, PacketKind::down, 0, "", 0, ActorRef(name_, "", 0, ::getpid()),
                watcher.monitor_id, borrow_value(down), Deadline::never(), true);
  } catch (const ActorError& e) {
    get_logger()->debug("mpx actors: down to {} dropped: {}", watcher.endpoint, e.what());
  }
}

void Endpoint::on_cell_stopped(const std::shared_ptr<ActorCell>& cell, DownKind kind, std::string reason) {
  std::vector<Watcher> watchers;
  {
    std::lock_guard lock(cell->mutex);
    cell->stopped = true;
    cell->stop_kind = kind;
    cell->stop_reason = reason;
    watchers.swap(cell->watchers);
  }
  get_logger()->debug("mpx actors: {} stopped: {}", cell->ref.to_string(), reason);
  Down down{cell->ref, kind, reason, {}};
  for (auto& watcher : watchers) {
    if (watcher.local) {
      fire_monitor(watcher.local, down);
      continue;
    }
    try {
      post_packet(watcher.endpoint, PacketKind::down, 0, "", 0, cell->ref, watcher.monitor_id, borrow_value(down),
                  Deadline::never(), true);
    } catch (const ActorError& e) {
      get_logger()->debug("mpx actors: down to {} dropped: {}", watcher.endpoint, e.what());
    }
  }
  // Only now is the actor gone from the host's tables: a host shutting down
  // waits for the tables to empty, so every Down above is sent before it exits.
  {
    std::lock_guard lock(mutex_);
    if (!cell->ref.name().empty()) {
      auto it = by_name_.find(cell->ref.name());
      if (it != by_name_.end() && it->second == cell) by_name_.erase(it);
    }
    for (auto it = by_id_.begin(); it != by_id_.end(); ++it)
      if (it->second == cell) {
        by_id_.erase(it);
        break;
      }
    cells_generation_.fetch_add(1, std::memory_order_release);
  }
  cells_changed_.notify_all();
  // The cell's state (its behaviour and object) goes with the last reference.
}

std::shared_ptr<PendingRequest> Endpoint::new_pending(const std::shared_ptr<ActorCell>& owner) {
  auto pending = std::make_shared<PendingRequest>();
  pending->owner = owner;
  std::lock_guard lock(mutex_);
  // Unique across the incarnations of this mailbox (2^40 requests each): a
  // reply slot is keyed by it, and a reply to a dead incarnation's request
  // must not fit.
  pending->id = (std::uint64_t{mailbox_->incarnation()} << 40) | (next_request_id_++ & ((std::uint64_t{1} << 40) - 1));
  pending_[pending->id] = PendingEntry{pending, {}};
  return pending;
}

void Endpoint::forget_pending(std::uint64_t id) {
  PendingEntry gone;  // destroyed outside the lock: ~PendingRequest forgets itself
  std::lock_guard lock(mutex_);
  auto it = pending_.find(id);
  if (it == pending_.end()) return;
  gone = std::move(it->second);
  pending_.erase(it);
}

void Endpoint::hold_pending_weakly(std::uint64_t id) {
  std::lock_guard lock(mutex_);
  auto it = pending_.find(id);
  if (it == pending_.end() || !it->second.strong) return;
  it->second.weak = it->second.strong;
  it->second.strong.reset();  // a caller's shared_ptr still holds it
}

std::shared_ptr<PendingRequest> Endpoint::take_pending(std::uint64_t id) {
  std::shared_ptr<PendingRequest> pending;
  std::lock_guard lock(mutex_);
  auto it = pending_.find(id);
  if (it == pending_.end()) return nullptr;
  pending = it->second.get();
  pending_.erase(it);
  return pending;
}

std::shared_ptr<MonitorState> Endpoint::new_monitor(const ActorRef& target, const std::shared_ptr<ActorCell>& owner,
                                                     bool link) {
  auto monitor = std::make_shared<MonitorState>();
  monitor->target = target;
  monitor->owner = owner;
  monitor->link = link;
  std::lock_guard lock(mutex_);
  monitor->id = next_id_++;
  monitors_[monitor->id] = monitor;
  return monitor;
}

std::shared_ptr<MonitorState> Endpoint::take_monitor(std::uint64_t id) {
  std::lock_guard lock(mutex_);
  auto it = monitors_.find(id);
  if (it == monitors_.end()) return nullptr;
  auto monitor = std::move(it->second);
  monitors_.erase(it);
  return monitor;
}

void Endpoint::fire_monitor(const std::shared_ptr<MonitorState>& monitor, Down down) {
  {
    std::lock_guard lock(monitor->mutex);
    if (monitor->down) return;
    monitor->down = std::move(down);
  }
  {
    std::lock_guard lock(mutex_);
    monitors_.erase(monitor->id);
  }
  monitor->cv.notify_all();
  const Down& d = *monitor->down;
  if (monitor->callback) {
    try {
      monitor->callback(d);
    } catch (const std::exception& e) {
      get_logger()->error("mpx actors: a monitor callback threw {}: {}", exception_type(e), e.what());
    }
  }
  if (!monitor->owner) return;
  Delivery delivery;
  delivery.cell = monitor->owner;
  if (monitor->link) {
    if (d.kind == DownKind::normal) return;
    if (!monitor->owner->trap_exit) {
      delivery.kind = Delivery::Kind::down;
      delivery.monitor = monitor;
    } else {
      delivery.value = own_value(ExitSignal{d.actor, d.kind, d.reason});
      delivery.sender = d.actor;
    }
  } else {
    delivery.value = own_value(d);
    delivery.sender = d.actor;
  }
  (void)enqueue(monitor->owner, std::move(delivery));
}

void Endpoint::flush_batch() {
  if (!batch_.empty()) (void)enqueue(batch_cell_, std::move(batch_));  // a stopped cell: ~Delivery cleans up
  batch_.clear();
  batch_cell_.reset();
}

void Endpoint::answer(const Packet& packet) {
  auto pending = take_pending(packet.request_id);
  if (!pending) return;  // forgotten (timed out) or answered already
  if (packet.kind == PacketKind::reply) {
    fulfil(pending, {}, Bytes(packet.payload.begin(), packet.payload.end()), std::nullopt);
    return;
  }
  fulfil(pending, {}, {}, decode_error_reply(packet.payload));
}

void Endpoint::refuse_message(const Packet& packet) {
  std::string who =
      packet.target_name.empty() ? "#" + std::to_string(packet.target_id) : std::string(packet.target_name);
  get_logger()->debug("mpx actors: message to actor {} in host {} dropped: no such actor", who, name_);
  if (packet.request_id)
    deliver_down_error(
        std::make_shared<ReplyTarget>(ReplyTarget{route_name(packet.sender), packet.request_id, nullptr, packet.reply_slot}),
        "mpx actors: actor " + who + " is not running in host '" + name_ + "' (noproc)", "noproc");
}

void Endpoint::fill_message_delivery(Delivery& delivery, Packet& packet, std::shared_ptr<ActorCell> cell) {
  if (packet.request_id)
    delivery.reply = std::make_shared<ReplyTarget>(
        ReplyTarget{route_name(packet.sender), packet.request_id, nullptr, packet.reply_slot});
  delivery.cell = std::move(cell);
  delivery.bytes = packet.payload;
  if (packet.sender) delivery.sender = std::move(packet.sender);
}

void Endpoint::dispatch(const Mailbox::Taken& taken) {
  // A plain message's sender is read only if its handler asks (most never
  // do): building it was a sixth of the gateway's time in a stream.
  Packet packet = parse_packet(taken.bytes, false);
  if (packet.kind != PacketKind::message || packet.request_id) packet = parse_packet(taken.bytes);
  if (packet.kind != PacketKind::message) {
    flush_batch();  // keep the order of messages and control packets
    handle_control(packet, [&] { mailbox_->complete(taken.pos); });
    return;
  }
  // Records in a row for one actor (a stream) skip the table lookup while
  // no actor entered or left it.
  const std::uint64_t generation = cells_generation_.load(std::memory_order_acquire);
  const bool same_cell =
      batch_cell_ && generation == batch_generation_ &&
      (packet.target_name.empty() ? batch_cell_->ref.name().empty() && batch_cell_->ref.id() == packet.target_id
                                  : batch_cell_->ref.name() == packet.target_name);
  if (!same_cell) {
    auto cell = find_local(packet.target_name, packet.target_id);
    if (!cell) {
      refuse_message(packet);
      mailbox_->complete(taken.pos);
      return;
    }
    // What may throw comes before the Delivery exists: once it does, it
    // alone completes the record (the gateway's catch completes it otherwise).
    if (cell != batch_cell_) flush_batch();
    batch_cell_ = std::move(cell);
    batch_generation_ = generation;
  }
  {
    // A recycled buffer if there is one, else a new small one (a request is
    // alone in its batch; a stream grows it). Not sized by the mailbox's
    // depth: that is on the senders' cache line, and reading it per batch
    // cost them.
    if (batch_.empty() && batch_.capacity() == 0) {
      std::lock_guard lock(spare_batches_mutex_);
      if (!spare_batches_.empty()) {
        batch_ = std::move(spare_batches_.back());
        spare_batches_.pop_back();
      }
    }
    if (batch_.empty()) batch_.reserve(kFirstBatchRecords);  // grows to kBatchRecords in a stream
  }
  // A plain message in a batch does without its own reference to the cell
  // (the batch holds one): the gateway took and the actor's thread dropped
  // one per message, a shared counter's line between the two threads.
  // ~Delivery needs it only to answer a request.
  // Built in place (a reallocation that throws does so before it exists,
  // and moves are noexcept); what may throw while it is filled takes it out
  // again before the record is in its care.
  Delivery& delivery = batch_.emplace_back();
  try {
    fill_message_delivery(delivery, packet, packet.request_id ? batch_cell_ : nullptr);
  } catch (...) {
    batch_.pop_back();
    throw;
  }
  if (!delivery.sender) delivery.packet = taken.bytes;
  delivery.mailbox = mailbox_.get();
  delivery.record_pos = taken.pos;
  delivery.redelivered = taken.redelivered;
  in_flight_.fetch_add(1, std::memory_order_acq_rel);
}

bool Endpoint::dispatch_from_node(Packet& packet, const Deadline& deadline, bool wait) {
  if (packet.kind != PacketKind::message) {
    handle_control(packet, [] {});
    return true;
  }
  {
    std::unique_lock lock(flight_mutex_);
    const std::size_t bound = mailbox_->capacity();
    if (!wait && direct_in_flight_ >= bound) return false;
    while (direct_in_flight_ >= bound) {
      auto left = deadline.remaining();
      if (left && left->count() == 0)
        throw MailboxFull("mpx nodes: " + std::to_string(bound) + " messages from other nodes wait in host '" + name_ +
                          "'; one more dropped");
      if (left) {
        flight_cv_.wait_for(lock, *left);
      } else {
        flight_cv_.wait(lock);
      }
    }
    ++direct_in_flight_;
  }
  auto cell = find_local(packet.target_name, packet.target_id);
  if (!cell) {
    refuse_message(packet);
    direct_finished();
    return true;
  }
  Delivery delivery;
  delivery.direct = true;  // from here its destructor gives the slot back, also if what follows throws
  fill_message_delivery(delivery, packet, cell);
  delivery.owned.assign(packet.payload.begin(), packet.payload.end());
  delivery.bytes = delivery.owned;
  (void)enqueue(cell, std::move(delivery));  // a stopped cell: ~Delivery answers and counts it
  return true;
}

void Endpoint::direct_finished() {
  std::lock_guard lock(flight_mutex_);
  --direct_in_flight_;
  flight_cv_.notify_all();
}

void Endpoint::handle_control(const Packet& packet, const std::function<void()>& release) {
  switch (packet.kind) {
    case PacketKind::message:
      break;  // fill_message_delivery's
    case PacketKind::reply:
    case PacketKind::error:
      answer(packet);
      break;
    case PacketKind::spawn: {
      auto reply = std::make_shared<ReplyTarget>(ReplyTarget{route_name(packet.sender), packet.request_id, nullptr});
      try {
        auto request = mpx::decode<SpawnRequest>(packet.payload);
        ActorRef ref = spawn_local(request.type, request.name, request.args_tag, request.args);
        deliver_reply(reply, borrow_value(ref));
      } catch (const UnknownActorType& e) {
        deliver_error(reply, "error", "mpx::actors::UnknownActorType", e.what());
      } catch (const mpx::Error& e) {
        deliver_error(reply, "error", exception_type(e), e.what());
      }
      break;
    }
    case PacketKind::monitor:
      add_watcher(ActorRef(name_, std::string(packet.target_name), packet.target_id, ::getpid()),
                  Watcher{route_name(packet.sender), packet.request_id, (packet.flags & kPacketLink) != 0, nullptr});
      break;
    case PacketKind::down: {
      Down down;
      try {
        down = mpx::decode<Down>(packet.payload);
      } catch (const mpx::Error& e) {
        get_logger()->error("mpx actors: undecodable Down: {}", e.what());
        break;
      }
      if (auto monitor = take_monitor(packet.request_id)) fire_monitor(monitor, std::move(down));
      break;
    }
    case PacketKind::link: {
      // packet.sender links to our actor: watch it on behalf of our actor.
      auto cell = find_local(packet.target_name, packet.target_id);
      release();  // before watch(), which may post and wait for room
      if (!cell) return;  // the sender's own link monitor reports noproc
      try {
        auto monitor = new_monitor(packet.sender, cell, true);
        watch(*this, monitor, kPacketLink);
      } catch (const std::exception& e) {
        // The record is released: the gateway's catch must not complete it again.
        get_logger()->error("mpx actors: host {} could not link {} to {}: {}", name_, cell->ref.to_string(),
                            packet.sender.to_string(), e.what());
      }
      return;
    }
    case PacketKind::kill:
      if (auto cell = find_local(packet.target_name, packet.target_id))
        caf::anon_send_exit(cell->actor, caf::exit_reason::kill);
      break;
    case PacketKind::shutdown:
      shutdown_.store(true);
      break;
    default:
      get_logger()->error("mpx actors: host {} got a packet of unknown kind {}", name_, static_cast<int>(packet.kind));
      break;
  }
  release();
}

void Endpoint::sweep_watches() {
  std::vector<std::shared_ptr<PendingRequest>> pending;
  std::vector<std::shared_ptr<MonitorState>> monitors;
  {
    std::lock_guard lock(mutex_);
    for (auto& [id, entry] : pending_)
      if (auto p = entry.get()) pending.push_back(std::move(p));
    for (auto& [id, m] : monitors_) monitors.push_back(m);
  }
  // One liveness probe per (mailbox, incarnation, pid). Our write position
  // is read first: a host found dead now had published everything it sent
  // us before that position.
  const std::uint64_t written = mailbox_->write_position();
  const std::uint64_t read = mailbox_->read_position();
  std::map<std::tuple<const Mailbox*, std::uint32_t, pid_t>, bool> gone;
  auto is_gone = [&](const std::shared_ptr<Mailbox>& mb, std::uint32_t inc, pid_t pid) {
    auto key = std::make_tuple(mb.get(), inc, pid);
    auto it = gone.find(key);
    if (it != gone.end()) return it->second;
    bool g = host_gone(*mb, inc, pid);
    gone[key] = g;
    return g;
  };
  // True once the death was seen and every record that arrived before it was taken.
  auto settled = [&](std::optional<std::uint64_t>& gone_at, const std::shared_ptr<Mailbox>& mb, std::uint32_t inc,
                     pid_t pid) {
    if (!gone_at) {
      if (!is_gone(mb, inc, pid)) return false;
      gone_at = written;
    }
    return read >= *gone_at;
  };
  for (auto& p : pending) {
    bool fire;
    {
      std::lock_guard lock(p->mutex);
      fire = !p->done && p->target_mailbox &&
             settled(p->gone_at, p->target_mailbox, p->target_incarnation, p->target_pid);
    }
    if (!fire) continue;
    std::string why = describe_dead_host(*p->target_mailbox, p->target_host, p->target_pid);
    fulfil(p, {}, {}, ErrorInfo{"down", "", "mpx actors: request to host '" + p->target_host + "' failed: " + why, why});
  }
  for (auto& m : monitors) {
    bool fire;
    {
      std::lock_guard lock(m->mutex);
      fire = !m->down && m->target_mailbox &&
             settled(m->gone_at, m->target_mailbox, m->target_incarnation, m->target_pid);
    }
    if (!fire) continue;
    auto code = host_exit_code(m->target.host(), m->target_pid, *m->target_mailbox);
    std::string why = describe_dead_host(*m->target_mailbox, m->target.host(), m->target_pid);
    fire_monitor(m, Down{m->target, DownKind::host_died, why, code});
  }
}

namespace {
// A gateway stopped at the in-flight limit takes again once its actors have
// handled a quarter of it: resuming at limit - 1 made it sleep and wake once
// per message (a futex wake-up from the actor's thread each time).
std::size_t resume_mark(std::size_t limit) { return limit - std::max<std::size_t>(1, limit / 2); }
}  // namespace

void Endpoint::record_finished(std::size_t records) {
  // The gateway held at the in-flight bound waits for the resume mark: wake
  // it when these records take the count across it.
  const std::size_t mark = resume_mark(mailbox_->in_flight_limit());
  const std::size_t before = in_flight_.fetch_sub(records, std::memory_order_acq_rel);
  if (before > mark && before - records <= mark) {
    std::lock_guard lock(flight_mutex_);
    gateway_cv_.notify_one();
  }
}

void Endpoint::run_gateway() {
  auto next_sweep = std::chrono::steady_clock::now() + kSweepInterval;
  const std::size_t limit = mailbox_->in_flight_limit();
  while (!stop_.load(std::memory_order_acquire) && !shutdown_.load(std::memory_order_acquire)) {
    std::optional<Mailbox::Taken> taken;
    if (in_flight_.load(std::memory_order_acquire) >= limit) {
      // The actors are behind: leave the messages in the mailbox.
      mailbox_->notify_producers();  // room the takes left below the wake mark is theirs meanwhile
      const std::size_t resume = resume_mark(limit);
      std::unique_lock lock(flight_mutex_);
      gateway_cv_.wait_for(lock, kSweepInterval, [&] { return in_flight_.load() <= resume || stop_.load(); });
    } else {
      try {
        taken = mailbox_->take(Deadline::after(kSweepInterval), &sweep_now_);
      } catch (const std::exception& e) {
        get_logger()->error("mpx actors: gateway of {}: {}", name_, e.what());
      }
    }
    // What is there already goes out in batches: one CAF message per run of
    // records for the same actor.
    for (std::size_t n = 0; taken; ++n) {
      try {
        dispatch(*taken);
      } catch (const std::exception& e) {
        get_logger()->error("mpx actors: gateway of {} dropped a record: {}", name_, e.what());
        mailbox_->complete(taken->pos);
      }
      taken.reset();
      if (n + 1 >= kBatchRecords || in_flight_.load(std::memory_order_acquire) >= limit || shutdown_.load()) break;
      taken = mailbox_->take(Deadline::passed());
    }
    flush_batch();
    auto now = std::chrono::steady_clock::now();
    if (now >= next_sweep || sweep_now_.load(std::memory_order_relaxed)) {
      sweep_now_.store(false, std::memory_order_seq_cst);  // before the sweep: a later death sweeps again
      next_sweep = now + kSweepInterval;
      try {
        sweep_watches();
      } catch (const std::exception& e) {
        get_logger()->error("mpx actors: gateway of {}: {}", name_, e.what());
      }
    }
  }
}

void Endpoint::stop_gateway() {
  stop_.store(true, std::memory_order_release);
  mailbox_->interrupt_consumer();
  if (gateway_.joinable()) gateway_.join();
}

void Endpoint::stop_all_actors(std::chrono::milliseconds timeout) {
  if (!system_) return;
  static const PoisonPill pill;
  for (auto& cell : cells()) {
    Delivery delivery;
    delivery.cell = cell;
    delivery.value = borrow_value(pill).owned();
    (void)enqueue(cell, std::move(delivery));
  }
  std::unique_lock lock(mutex_);
  if (!cells_changed_.wait_for(lock, timeout, [this] { return by_id_.empty(); }))
    get_logger()->warn("mpx actors: host {}: {} actors still running after the shutdown timeout", name_,
                       by_id_.size());
}

}  // namespace mpx::actors::detail

namespace mpx::actors::detail {

std::optional<int> host_exit_code(const std::string& host, pid_t pid, const Mailbox& mailbox) {
  if (auto code = child_host_exit_code(host, pid)) return code;
  return mailbox.exit_code();
}

std::string describe_dead_host(const Mailbox& mailbox, const std::string& host, pid_t pid) {
  if (mailbox.retired()) return "host '" + host + "' was shut down";
  if (mailbox.host_state() == HostState::stopped) return "host '" + host + "' stopped";
  auto code = host_exit_code(host, pid, mailbox);
  return "host '" + host + "' (pid " + std::to_string(pid) + ") died" +
         (code ? ": exit code " + std::to_string(*code) : std::string());
}

}  // namespace mpx::actors::detail
