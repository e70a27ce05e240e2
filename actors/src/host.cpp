// Host: a worker process hosting actors (see mpx/actors/host.hpp).
#include "mpx/actors/host.hpp"

#include <unistd.h>

#include <map>
#include <mutex>

#include "mpx/forkserver.hpp"
#include "mpx/logging.hpp"
#include "mpx/shared_memory.hpp"
#include "exception_slot.hpp"
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
};

namespace {
void run_host(const std::string& name, std::int32_t tree, const HostConfig& config,
              const std::vector<SpawnRequest>& specs);
}

// The body of a host process (registered: hosts start under forkserver too).
// An exception that escapes it is left in `exception_memory` (an
// ExceptionSlot, see Host::exception) before the bootstrap logs it and exits 1.
void host_main(std::string name, std::int32_t tree, HostConfig config, std::vector<SpawnRequest> specs,
               SharedMemory exception_memory) {
  run_recording(exception_slot_in(exception_memory), [&] { run_host(name, tree, config, specs); });
}

namespace {
void run_host(const std::string& name, std::int32_t tree, const HostConfig& config,
              const std::vector<SpawnRequest>& specs) {
  set_tree_root(static_cast<pid_t>(tree));
  if (!config.node.empty() && local_node_name().empty())
    set_local_node(config.node, static_cast<std::size_t>(config.node_max_message));
  auto mailbox = Mailbox::open(mailbox_name(name));
  Endpoint& endpoint = Endpoint::make_host(name, mailbox, config.threads);
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

  ~HostControl();
  void start();  // caller holds mutex
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

void HostControl::start() {
  const std::uint32_t expected = mailbox->incarnation() + 1;
  HostConfig config{options.threads, options.shutdown_timeout.count(), local_node_name(), local_node_max_message()};
  ProcessOptions process_options;
  process_options.name = name;
  process_options.daemon = options.daemon;
  process_options.start_method = options.start_method;
  process_options.limits = options.limits;
  exception_slot = fresh_exception_slot(exception_memory);
  process.emplace(process_options, &host_main, name, static_cast<std::int32_t>(tree_root()), config, specs,
                  exception_memory);
  process->start();
  {
    std::lock_guard lock(state_mutex);
    handle = process->handle();
  }
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

void Host::restart() {
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
  control_->start();
}

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
