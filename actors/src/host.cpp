// Host: a worker process hosting actors (see mpx/actors/host.hpp).
#include "mpx/actors/host.hpp"

#include <unistd.h>

#include <atomic>
#include <map>
#include <mutex>

#include "mpx/detail/futex.hpp"
#include "mpx/forkserver.hpp"
#include "mpx/logging.hpp"
#include "mpx/shared_memory.hpp"
#include "exception_slot.hpp"
#include "host_access.hpp"
#include "runtime.hpp"

namespace mpx::actors::detail {

struct HostConfig {
  std::uint32_t threads = 0;
  std::int64_t shutdown_ms = 5000;
  std::string node;  // the tree's node name (empty: none); a forkserver child does not inherit it
  std::uint64_t node_max_message = 0;
  template <class A>
  void serialize(A& ar) {
    ar(threads, shutdown_ms, node, node_max_message);
  }
  bool operator==(const HostConfig&) const = default;
};

// What a standby host (HostOptions::standby) waits on, in memory it shares
// with its parent: the parent stores go (take the mailbox over) or quit.
struct StandbySlot {
  enum Command : std::uint32_t { wait = 0, go = 1, quit = 2 };
  std::atomic<std::uint32_t> command{wait};
};
static_assert(std::atomic<std::uint32_t>::is_always_lock_free, "shared between processes");

namespace {

void command_standby(const SharedMemory& memory, StandbySlot::Command command) {
  auto& slot = slot_in<StandbySlot>(memory);
  slot.command.store(command, std::memory_order_release);
  mpx::detail::futex_wake_all(slot.command);
}

// In the standby: true once told to go, false to quit. No deadline needed:
// it dies with its parent (PR_SET_PDEATHSIG, as every mpx child).
bool wait_for_go(StandbySlot& slot) {
  for (;;) {
    const std::uint32_t command = slot.command.load(std::memory_order_acquire);
    if (command != StandbySlot::wait) return command == StandbySlot::go;
    (void)mpx::detail::futex_wait(slot.command, command);
  }
}

void run_host(const std::string& name, std::int32_t tree, const HostConfig& config,
              const std::vector<SpawnRequest>& specs, StandbySlot* standby);


// Runs a few messages through a throwaway actor of the standby's own actor
// system: its scheduler threads, mailboxes and allocator are in use (and
// their pages this process' own) before the first real message comes.
caf::behavior echo_actor(caf::event_based_actor*, int) {
  return {[](int x) { return x; }};
}

void warm_up(caf::actor_system& system) {
  // With an argument: CAF 0.17 binds a reference to a null tuple for an
  // actor function without one (UBSan reports it).
  auto echo = system.spawn(echo_actor, 0);
  caf::scoped_actor self{system};
  for (int i = 0; i < 64; ++i) self->request(echo, caf::infinite, i).receive([](int) {}, [](caf::error&) {});
  self->send_exit(echo, caf::exit_reason::user_shutdown);
}

}  // namespace

// The body of a host process (registered: hosts start under forkserver too).
// An exception that escapes it is left in `exception_memory` (an
// ExceptionSlot, see Host::exception) before the bootstrap logs it and exits 1.
void host_main(std::string name, std::int32_t tree, HostConfig config, std::vector<SpawnRequest> specs,
               SharedMemory exception_memory) {
  run_recording(exception_slot_in(exception_memory), [&] { run_host(name, tree, config, specs, nullptr); });
}

// The body of a standby host: as host_main, but it starts its actor system,
// then waits in `standby_memory` (a StandbySlot) before it takes the mailbox.
void standby_host_main(std::string name, std::int32_t tree, HostConfig config, std::vector<SpawnRequest> specs,
                       SharedMemory exception_memory, SharedMemory standby_memory) {
  run_recording(exception_slot_in(exception_memory),
                [&] { run_host(name, tree, config, specs, &slot_in<StandbySlot>(standby_memory)); });
}

namespace {
void run_host(const std::string& name, std::int32_t tree, const HostConfig& config,
              const std::vector<SpawnRequest>& specs, StandbySlot* standby) {
  set_tree_root(static_cast<pid_t>(tree));
  if (!config.node.empty() && local_node_name().empty())
    set_local_node(config.node, static_cast<std::size_t>(config.node_max_message));
  auto mailbox = Mailbox::open(mailbox_name(name));
  Endpoint& endpoint = Endpoint::make_host(name, mailbox, config.threads);
  if (standby) {
    (void)endpoint.system();  // CAF's start (most of a cold start's time), paid ahead
    warm_up(endpoint.system());
    if (!wait_for_go(*standby)) return;
  }
  const auto recovery = mailbox->attach_consumer();
  auto logger = get_logger();
  if (recovery.requeued || recovery.redelivered)
    logger->info("mpx actors: host {} (incarnation {}) resumes its mailbox: {} taken messages requeued, {} in hand "
                 "redelivered",
                 name, mailbox->incarnation(), recovery.requeued, recovery.redelivered);
  for (const auto& spec : specs) {
    try {
      endpoint.spawn_local(spec.type, spec.name, spec.args_tag, spec.args);
    } catch (const std::exception& e) {
      logger->error("mpx actors: host {} could not spawn '{}' ({}): {}", name, spec.name, spec.type, e.what());
    }
  }
  endpoint.run_gateway();
  endpoint.stop_all_actors(std::chrono::milliseconds(config.shutdown_ms));
  mailbox->set_host_state(HostState::stopped, 0);
}
}  // namespace

}  // namespace mpx::actors::detail

MPX_REGISTER_FUNCTION(mpx::actors::detail::host_main);
MPX_REGISTER_FUNCTION(mpx::actors::detail::standby_host_main);

namespace mpx::actors {

namespace detail {

struct HostControl {
  pid_t owner = ::getpid();  // the parent; a forked copy of this object in a child does nothing
  std::string name;
  HostOptions options;
  std::shared_ptr<Mailbox> mailbox;
  // Serialises start, stop, restart and shutdown; held while a new process
  // starts (up to the spawn timeout).
  mutable std::mutex mutex;
  // Guards `handle` and `restarts`, written with both locks held and read
  // with either: the parent's gateway (child_host_exit_code) and the getters
  // must not wait for a start. Also makes record_death's check-and-set of
  // the mailbox's state atomic with restart's and stop's. Never held across
  // a blocking call.
  mutable std::mutex state_mutex;
  std::optional<Process> process;
  std::optional<ProcessHandle> handle;
  std::vector<SpawnRequest> specs;  // named spawns, replayed by restart()
  // An ExceptionSlot the host process shares (passed to host_main: a
  // descriptor under forkserver and spawn); its name is unlinked at once.
  SharedMemory exception_memory;
  ExceptionSlot* exception_slot = nullptr;  // in exception_memory
  unsigned restarts = 0;
  bool shut_down = false;
  // HostOptions::standby: the next process, forked after each start, its
  // actor system started, waiting in its StandbySlot (standby_memory).
  std::optional<Process> standby;
  SharedMemory standby_memory;
  SharedMemory standby_exception_memory;  // becomes exception_memory when it takes over
  std::size_t standby_specs = 0;          // specs.size() at its fork: a named spawn since makes it stale
  HostConfig standby_config;
  pid_t standby_pid = 0;  // guarded by state_mutex (Host::standby_pid does not wait for a start)

  ~HostControl();
  [[nodiscard]] HostConfig config() const {
    return HostConfig{options.threads, options.shutdown_timeout.count(), local_node_name(), local_node_max_message()};
  }
  [[nodiscard]] ProcessOptions process_options() const {
    ProcessOptions o;
    o.name = name;
    o.daemon = options.daemon;
    o.start_method = options.start_method;
    o.limits = options.limits;
    return o;
  }
  // These: caller holds mutex. start() forks the next standby unless told
  // not to (HostAccess::restart_standby_later).
  void start(bool standby_now = true);
  void start_cold();  // forks a new host process
  // Until the process has taken the mailbox (incarnation `expected`);
  // throws ActorError when it exits first or the spawn timeout passes.
  void await_running(std::uint32_t expected);
  // Hands the mailbox to the standby, which becomes the current process;
  // false (after discarding it) when there is none it can use.
  bool take_standby();
  // Forks the next standby; a failure is logged (restart() then starts cold).
  void fork_standby() noexcept;
  void discard_standby() noexcept;
  // Poison pills, wait, SIGTERM, SIGKILL; the mailbox stays (caller holds mutex).
  void stop_process(std::chrono::milliseconds timeout);
  void shutdown(std::chrono::milliseconds timeout);
  [[nodiscard]] std::optional<ProcessHandle> current_handle() const {
    std::lock_guard lock(state_mutex);
    return handle;
  }
};

namespace {
std::mutex g_hosts_mutex;
std::map<std::string, std::weak_ptr<HostControl>> g_hosts;  // hosts this process started
}  // namespace

std::optional<int> child_host_exit_code(const std::string& host, pid_t pid) {
  std::shared_ptr<HostControl> control;
  {
    std::lock_guard lock(g_hosts_mutex);
    auto it = g_hosts.find(host);
    if (it != g_hosts.end()) control = it->second.lock();
  }
  if (!control || control->owner != ::getpid()) return std::nullopt;
  const std::optional<ProcessHandle> handle = control->current_handle();  // not waiting for a restart
  if (!handle || handle->pid() != pid) return std::nullopt;
  (void)handle->join(std::chrono::milliseconds(50));  // a dead child is a zombie: reaped at once
  return handle->exitcode();
}

void HostControl::start(bool standby_now) {
  const std::uint32_t expected = mailbox->incarnation() + 1;
  if (!take_standby()) {
    start_cold();
    await_running(expected);
  } else {
    try {
      await_running(expected);
    } catch (const ActorError& e) {
      // The standby died before it took the mailbox (killed as it was told
      // to go): that is no reason to fail the restart.
      get_logger()->warn("mpx actors: host {}: the standby did not take over ({}); starting cold", name, e.what());
      start_cold();
      await_running(expected);
    }
  }
  if (options.standby && standby_now) fork_standby();
}

void HostControl::start_cold() {
  exception_slot = fresh_exception_slot(exception_memory);
  process.emplace(process_options(), &host_main, name, static_cast<std::int32_t>(tree_root()), config(), specs,
                  exception_memory);
  process->start();
  std::lock_guard lock(state_mutex);
  handle = process->handle();
}

void HostControl::await_running(std::uint32_t expected) {
  auto deadline = mpx::detail::Deadline::after(options.spawn_timeout);
  for (;;) {
    const HostState state = mailbox->host_state();
    if (mailbox->incarnation() == expected && state == HostState::running) break;
    if (!handle->is_alive()) {
      // It started, then died at once (the watcher of whoever restarts it sees that).
      if (mailbox->incarnation() == expected && mailbox->host_state() == HostState::running) break;
      std::string why = handle->exitcode() ? "exit code " + std::to_string(*handle->exitcode()) : "";
      if (auto e = exception_slot->read())
        why += ", uncaught " + e->type + (e->message.empty() ? "" : ": " + e->message);
      throw ActorError("mpx actors: host '" + name + "' exited while starting" + (why.empty() ? "" : " (" + why + ")"));
    }
    if (deadline.expired()) {
      handle->kill();
      handle->join();
      throw ActorError("mpx actors: host '" + name + "' did not start within the spawn timeout");
    }
    // Woken by the child's attach_consumer(); a child that dies first is seen within 1 ms.
    mailbox->wait_host_state(state, mpx::detail::Deadline::after(std::chrono::milliseconds(1)));
  }
}

bool HostControl::take_standby() {
  if (!standby) return false;
  if (!standby->is_alive() || standby_specs != specs.size() || !(standby_config == config())) {
    discard_standby();
    return false;
  }
  command_standby(standby_memory, StandbySlot::go);
  std::swap(exception_memory, standby_exception_memory);
  exception_slot = &exception_slot_in(exception_memory);
  process = std::move(standby);
  standby.reset();
  std::lock_guard lock(state_mutex);
  handle = process->handle();
  standby_pid = 0;
  return true;
}

void HostControl::fork_standby() noexcept {
  try {
    (void)fresh_slot<StandbySlot>(standby_memory);
    (void)fresh_exception_slot(standby_exception_memory);
    standby_specs = specs.size();
    standby_config = config();
    standby.emplace(process_options(), &standby_host_main, name, static_cast<std::int32_t>(tree_root()),
                    standby_config, specs, standby_exception_memory, standby_memory);
    standby->start();
    std::lock_guard lock(state_mutex);
    standby_pid = standby->pid();
  } catch (const std::exception& e) {
    standby.reset();
    get_logger()->warn("mpx actors: host {}: no standby process ({}); the next restart starts cold", name, e.what());
  }
}

void HostControl::discard_standby() noexcept {
  if (!standby) return;
  try {
    command_standby(standby_memory, StandbySlot::quit);
    auto h = standby->handle();
    if (!h.join(options.shutdown_timeout)) {
      h.kill();
      h.join();
    }
  } catch (const std::exception& e) {
    get_logger()->warn("mpx actors: host {}: ending its standby process: {}", name, e.what());
  }
  standby.reset();
  std::lock_guard lock(state_mutex);
  standby_pid = 0;
}

void HostControl::stop_process(std::chrono::milliseconds timeout) {
  if (!handle || !handle->is_alive()) return;
  try {
    post_packet(name, PacketKind::shutdown, 0, "", 0, current_sender(), 0, Value{},
                mpx::detail::Deadline::after(timeout), true);
  } catch (const std::exception& e) {
    get_logger()->warn("mpx actors: host {}: shutdown request not delivered: {}", name, e.what());
  }
  if (!handle->join(timeout)) {
    get_logger()->warn("mpx actors: host {} did not stop within {} ms: terminating it", name, timeout.count());
    handle->terminate();
    if (!handle->join(std::chrono::seconds(1))) {
      get_logger()->warn("mpx actors: host {} ignored SIGTERM: killing it", name);
      handle->kill();
      handle->join();
    }
  }
  std::lock_guard lock(state_mutex);  // not overwritten by a record_death that saw it running
  mailbox->set_host_state(HostState::stopped, handle->exitcode());
}

void HostControl::shutdown(std::chrono::milliseconds timeout) {
  std::lock_guard lock(mutex);
  if (shut_down || !mailbox || owner != ::getpid()) return;
  shut_down = true;
  discard_standby();
  stop_process(timeout);
  mailbox->retire();
  mailbox->unlink();
  std::lock_guard hosts(g_hosts_mutex);
  auto it = g_hosts.find(name);
  if (it != g_hosts.end() && it->second.expired()) g_hosts.erase(it);
}

HostControl::~HostControl() {
  try {
    shutdown(options.shutdown_timeout);
  } catch (const std::exception& e) {
    get_logger()->error("mpx actors: host {}: shutdown failed: {}", name, e.what());
  }
  std::lock_guard hosts(g_hosts_mutex);
  auto it = g_hosts.find(name);
  if (it != g_hosts.end() && it->second.expired()) g_hosts.erase(it);
}

}  // namespace detail

Host::Host(std::string name, HostOptions options) : Host(std::move(name), std::move(options), {}) {}

Host::Host(std::string name, HostOptions options, const std::vector<ActorSpec>& actors) {
  detail::check_name(name, "host name");
  auto control = std::make_shared<detail::HostControl>();
  control->name = name;
  control->options = options;
  for (const auto& actor : actors) {
    detail::check_spawn(actor.type, actor.args.tag, actor.args.type_name);
    if (!actor.name.empty()) detail::check_name(actor.name, "actor name");
    control->specs.push_back(detail::SpawnRequest{actor.type, actor.name, actor.args.tag, actor.args.bytes});
  }
  bool adopted = false;
  try {
    control->mailbox = detail::Mailbox::create_or_adopt(detail::mailbox_name(name), options.mailbox, adopted);
  } catch (const FileExistsError&) {
    throw ActorError("mpx actors: a host named '" + name + "' already exists in this process tree");
  }
  if (adopted) {
    get_logger()->warn("mpx actors: host {}: took over the mailbox its dead owner left, with {} waiting message(s)",
                       name, control->mailbox->depth());
  }
  detail::remember_mailbox(name, control->mailbox);
  {
    std::lock_guard lock(detail::g_hosts_mutex);
    detail::g_hosts[name] = control;
  }
  {
    std::lock_guard lock(control->mutex);
    try {
      control->start();
    } catch (...) {
      control->shut_down = true;
      control->mailbox->retire();
      control->mailbox->unlink();
      throw;
    }
  }
  control_ = std::move(control);
}

ActorRef Host::spawn_encoded(const std::string& type, const std::string& name, const detail::SpawnArgs& args) {
  detail::check_spawn(type, args.tag, args.type_name);
  if (!name.empty()) detail::check_name(name, "actor name");
  auto& endpoint = detail::Endpoint::instance();
  auto pending = endpoint.new_pending(nullptr);
  auto& mailbox = control_->mailbox;
  const std::uint32_t incarnation = mailbox->incarnation();
  const pid_t pid = mailbox->consumer_pid();
  {
    std::lock_guard lock(pending->mutex);
    pending->target_host = control_->name;
    pending->target_mailbox = mailbox;
    pending->target_incarnation = incarnation;
    pending->target_pid = pid;
  }
  if (detail::host_gone(*mailbox, incarnation, pid)) {
    endpoint.forget_pending(pending->id);
    std::string why = detail::describe_dead_host(*mailbox, control_->name, pid);
    throw ActorDown("mpx actors: spawn in " + why, why);
  }
  detail::SpawnRequest request{type, name, args.tag, args.bytes};
  try {
    detail::post_packet(control_->name, detail::PacketKind::spawn, 0, "", 0, detail::current_sender(), pending->id,
                        detail::borrow_value(request), mpx::detail::Deadline::after(control_->options.spawn_timeout),
                        true);
  } catch (...) {
    endpoint.forget_pending(pending->id);
    throw;
  }
  if (!detail::wait_pending(*pending, mpx::detail::Deadline::after(control_->options.spawn_timeout))) {
    endpoint.forget_pending(pending->id);
    throw mpx::TimeoutError("mpx actors: spawn of '" + type + "' in host '" + control_->name + "' timed out");
  }
  ActorRef ref = detail::extract_reply<ActorRef>(*pending);
  if (!name.empty()) {
    std::lock_guard lock(control_->mutex);
    control_->specs.push_back(std::move(request));
  }
  return ref;
}

ActorRef Host::actor(const std::string& name) const { return ActorRef(control_->name, name, 0, pid()); }

void Host::shutdown() { control_->shutdown(control_->options.shutdown_timeout); }
void Host::stop(std::chrono::milliseconds timeout) {
  std::lock_guard lock(control_->mutex);
  if (control_->owner != ::getpid() || control_->shut_down) return;
  control_->stop_process(timeout);
}
void Host::shutdown(std::chrono::milliseconds timeout) { control_->shutdown(timeout); }

void Host::restart() { restart_host(true); }

void Host::restart_host(bool standby_now) {
  std::lock_guard lock(control_->mutex);
  if (control_->owner != ::getpid())
    throw ActorError("mpx actors: host '" + control_->name + "' can only be restarted by the process that started it");
  if (control_->shut_down) throw ActorError("mpx actors: host '" + control_->name + "' was shut down");
  if (control_->handle && control_->handle->is_alive())
    throw ActorError("mpx actors: host '" + control_->name + "' is still running; restart() needs a dead process");
  {
    std::lock_guard state(control_->state_mutex);
    if (control_->handle) control_->mailbox->set_host_state(detail::HostState::died, control_->handle->exitcode());
    ++control_->restarts;
  }
  control_->start(standby_now);
}

namespace detail {
void HostAccess::restart_standby_later(Host& host) { host.restart_host(false); }
void HostAccess::refresh_standby(Host& host) {
  HostControl& control = *host.control_;
  std::lock_guard lock(control.mutex);
  if (!control.options.standby || control.shut_down || control.owner != ::getpid()) return;
  if (control.standby && control.standby->is_alive()) return;
  control.discard_standby();  // reaps a dead one
  control.fork_standby();
}
}  // namespace detail

const std::string& Host::name() const { return control_->name; }
pid_t Host::pid() const { return process().pid(); }
namespace detail {
namespace {
// Records in the mailbox that the host's process ended (if it did and no
// newer incarnation runs).
void record_death(HostControl& control, const ProcessHandle& handle) {
  auto code = handle.exitcode();
  if (!code) return;
  std::lock_guard lock(control.state_mutex);  // not waiting for a restart
  if (control.handle && control.handle->pid() == handle.pid() &&
      control.mailbox->host_state() == HostState::running && control.mailbox->consumer_pid() == handle.pid())
    control.mailbox->set_host_state(HostState::died, code);
}
}  // namespace
}  // namespace detail

bool Host::is_alive() const {
  auto handle = process();
  if (handle.is_alive()) return true;
  detail::record_death(*control_, handle);
  return false;
}
void Host::join() const {
  auto handle = process();
  handle.join();
  detail::record_death(*control_, handle);
}
bool Host::join_for(std::chrono::milliseconds timeout) const {
  auto handle = process();
  if (!handle.join(timeout)) return false;
  detail::record_death(*control_, handle);
  return true;
}
ProcessHandle Host::process() const { return *control_->current_handle(); }
pid_t Host::standby_pid() const {
  std::lock_guard lock(control_->state_mutex);
  return control_->standby_pid;
}
unsigned Host::restarts() const {
  std::lock_guard lock(control_->state_mutex);
  return control_->restarts;
}
std::optional<ChildException> Host::exception() const {
  std::lock_guard lock(control_->mutex);
  if (!control_->exception_slot || !control_->handle || control_->handle->is_alive()) return std::nullopt;
  return control_->exception_slot->read();
}
std::size_t Host::mailbox_depth() const { return control_->mailbox->depth(); }
std::uint64_t Host::dropped() const { return control_->mailbox->dropped(); }
std::uint64_t Host::in_flight() const { return control_->mailbox->in_flight(); }
std::uint64_t Host::messages_taken() const { return control_->mailbox->taken_total(); }

std::string Host::to_string() const {
  std::string state = is_alive() ? "running" : "stopped";
  auto code = exitcode();
  if (code) state += " exitcode=" + std::to_string(*code);
  return "<Host " + control_->name + " pid " + std::to_string(pid()) + " " + state + ">";
}

std::ostream& operator<<(std::ostream& out, const Host& host) { return out << host.to_string(); }

}  // namespace mpx::actors
