// mpx/actors/host.hpp: a worker process hosting actors.
//
//     mpx::actors::Host worker("worker-1");                  // starts the process
//     auto a = worker.spawn("adder", "adder-1");              // by registered type name
//     int sum = a.request<int>(Add{1, 2}).get(1s);
//     worker.shutdown();                                      // poison pills, wait, exit 0
//
// Contract
// - A Host is a cheap shared handle made in the parent: it creates the
//   host's mailbox (shared memory named after the tree and the host name,
//   owned by this process) and starts the child (an mpx::Process, with the
//   start method of HostOptions or the process default; under forkserver a
//   multi-threaded program can start hosts; HostOptions::limits applied
//   at every start; invalid ones make the constructor throw ProcessError).
//   The child runs a fresh CAF actor system and a gateway thread that takes
//   messages from the mailbox.
//   Names are [A-Za-z0-9_.-]{1,64} and unique in the tree while the host lives
//   (a second live Host of that name throws ActorError). A mailbox whose
//   owner died without removing it (a SIGKILLed nested supervisor: the
//   processes that sent to it still hold the name) is taken over by the next
//   Host of that name, with every message in it, as restart() would; give
//   that Host its named actors at construction (the ActorSpec constructor)
//   so that the waiting messages find them.
// - spawn(type, name, args...) builds an actor in the host and returns its
//   ref once it exists (blocks up to HostOptions::spawn_timeout; throws
//   UnknownActorType / ActorError at once for a bad type or argument types,
//   ActorDown when the host is not running, TimeoutError). Actors spawned
//   here with a name are spawned again by restart().
// - shutdown(timeout): sends every actor of the host a poison pill after
//   what is already queued, waits for them and for the process to exit 0; past
//   the timeout it terminates, then kills the process. Idempotent. The
//   mailbox is then retired (refs to this host fail with ActorDown).
//   Destroying the last Host handle shuts the host down; a daemon host is
//   also terminated when its parent exits.
// - stop(timeout): the same orderly stop, keeping the mailbox for restart().
// - restart(): after the process died (or was killed), starts a new one on
//   the same mailbox: messages queued meanwhile are kept, what the dead one
//   had taken but not handled is handled now, and the message each actor
//   was handling is delivered again flagged redelivered (docs/actors.md).
//   Throws ActorError while the process is still alive.
// - HostOptions::standby: after each start the parent also forks a standby
//   process that opens the mailbox, starts its CAF actor system and waits.
//   restart() hands the mailbox to it (it then spawns the named actors and
//   serves), which saves the fork and the actor system's start (most of a
//   restart's time), then forks the next standby (a supervisor forks it
//   20 ms later, off the path of the restarted host's first messages). The
//   standby is not used, but ended and replaced by a cold start, when it
//   died, when a named spawn() added an actor since it was forked, or when
//   the tree became a node since; one that dies as it is told to go is
//   replaced by a cold start too. shutdown() ends it; stop() keeps it for
//   the restart(). It costs one more idle process per host and a second
//   fork at every start (its limits count from its own fork).
// - exception(): an exception that escaped the host process' main (it then
//   exits 1) is written by it, before it exits, into a small block it shares
//   with this process (a descriptor under every start method), made anew at
//   each start; "exited while starting" errors name it too.
// - Methods may be called from any thread of the parent; the process calls
//   (join, terminate, kill, exitcode) are Process's. A start (constructor,
//   restart()) holds the host's lock until the new process serves or fails
//   (up to spawn_timeout): stop, shutdown, restart, exception() and the
//   recording of a named spawn() wait for it; process(), pid(), restarts(),
//   standby_pid(), is_alive(), join() and the parent failing requests and monitors to the
//   dead process do not (from the fork on, process() is the new process).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include "mpx/actors/actor_ref.hpp"
#include "mpx/actors/detail/spawn_args.hpp"
#include "mpx/actors/mailbox_options.hpp"
#include "mpx/process.hpp"

namespace mpx::actors {

struct HostOptions {
  bool daemon = false;
  std::optional<StartMethod> start_method;           // empty: mpx::get_start_method()
  MailboxOptions mailbox;
  unsigned threads = 0;                              // CAF scheduler threads; 0: min(cpu_count(), 4)
  std::chrono::milliseconds shutdown_timeout{5000};  // poison pill -> exit; then SIGTERM, then SIGKILL
  std::chrono::milliseconds spawn_timeout{10000};
  // Applied to the host process at its start and at every restart()
  // (mpx/process.hpp: a CPU limit ends it with -SIGXCPU; an address-space
  // limit must leave room for the CAF actor system and its threads' stacks).
  ProcessLimits limits;
  // A standby process forked ahead, which restart() hands the mailbox to
  // (see the contract above).
  bool standby = false;

  HostOptions& with_standby(bool value = true) & {
    standby = value;
    return *this;
  }
  HostOptions&& with_standby(bool value = true) && { return std::move(with_standby(value)); }
  HostOptions& with_daemon(bool value = true) & {
    daemon = value;
    return *this;
  }
  HostOptions&& with_daemon(bool value = true) && { return std::move(with_daemon(value)); }
  HostOptions& with_start_method(StartMethod value) & {
    start_method = value;
    return *this;
  }
  HostOptions&& with_start_method(StartMethod value) && { return std::move(with_start_method(value)); }
  HostOptions& with_mailbox(MailboxOptions value) & {
    mailbox = value;
    return *this;
  }
  HostOptions&& with_mailbox(MailboxOptions value) && { return std::move(with_mailbox(value)); }
  HostOptions& with_threads(unsigned value) & {
    threads = value;
    return *this;
  }
  HostOptions&& with_threads(unsigned value) && { return std::move(with_threads(value)); }
  HostOptions& with_shutdown_timeout(std::chrono::milliseconds value) & {
    shutdown_timeout = value;
    return *this;
  }
  HostOptions&& with_shutdown_timeout(std::chrono::milliseconds value) && {
    return std::move(with_shutdown_timeout(value));
  }
  HostOptions& with_limits(ProcessLimits value) & {
    limits = std::move(value);
    return *this;
  }
  HostOptions&& with_limits(ProcessLimits value) && { return std::move(with_limits(std::move(value))); }
};

// The uncaught exception a child process ended with (a host's, or a
// supervisor's process child's).
struct ChildException {
  std::string type;     // demangled: "std::runtime_error"; at most 255 bytes
  std::string message;  // what(), empty for a type not derived from std::exception; at most 3 KiB
};

namespace detail {
struct HostControl;
struct HostAccess;
}

// A named actor a host runs from its start (and again at each restart).
struct ActorSpec {
  std::string type;
  std::string name;
  detail::SpawnArgs args;
  template <class... Args>
  static ActorSpec make(std::string type, std::string name, const Args&... args) {
    return ActorSpec{std::move(type), std::move(name), detail::encode_spawn_args(args...)};
  }
};

class Host {
 public:
  explicit Host(std::string name, HostOptions options = {});
  // A host whose named `actors` are spawned before it reads its first
  // message: messages already waiting for them (a mailbox taken over from a
  // dead owner, see below) find them. Throws as spawn() for an unknown type.
  Host(std::string name, HostOptions options, const std::vector<ActorSpec>& actors);
  Host(const Host&) = default;
  Host& operator=(const Host&) = default;
  Host(Host&&) noexcept = default;
  Host& operator=(Host&&) noexcept = default;
  ~Host() = default;  // the last handle's control block shuts the host down

  template <class... Args>
  ActorRef spawn(const std::string& type, const std::string& name = "", const Args&... args) {
    return spawn_encoded(type, name, detail::encode_spawn_args(args...));
  }
  // spawn with arguments already encoded (what a supervisor's ActorSpec holds).
  ActorRef spawn_with(const std::string& type, const std::string& name, const detail::SpawnArgs& args) {
    return spawn_encoded(type, name, args);
  }
  // A ref to the actor registered under `name` in this host (no round trip).
  [[nodiscard]] ActorRef actor(const std::string& name) const;

  void shutdown();
  void shutdown(std::chrono::milliseconds timeout);
  // As shutdown, but the mailbox stays: messages keep arriving and waiting,
  // and restart() continues from them (what a supervisor does).
  void stop(std::chrono::milliseconds timeout);
  void restart();

  [[nodiscard]] const std::string& name() const;
  [[nodiscard]] pid_t pid() const;
  // is_alive and join record a death they see in the mailbox, so that
  // requests to the dead host fail at once instead of waiting in it.
  [[nodiscard]] bool is_alive() const;
  void join() const;
  template <class Rep, class Period>
  bool join(std::chrono::duration<Rep, Period> timeout) const {
    return join_for(std::chrono::duration_cast<std::chrono::milliseconds>(timeout));
  }
  void terminate() const { process().terminate(); }
  void kill() const { process().kill(); }
  [[nodiscard]] std::optional<int> exitcode() const { return process().exitcode(); }
  // The current process (a copy: restart() replaces it).
  [[nodiscard]] ProcessHandle process() const;
  // How many times restart() started a new process.
  [[nodiscard]] unsigned restarts() const;
  // The waiting standby process (HostOptions::standby); 0 when there is none.
  [[nodiscard]] pid_t standby_pid() const;
  // The exception the current process ended with when one escaped the host's
  // main (e.g. thrown by an actor of the ActorSpec constructor that is not a
  // std::exception, which the host cannot log and skip); nullopt while it
  // runs and after any other end.
  [[nodiscard]] std::optional<ChildException> exception() const;

  // Mailbox figures: messages waiting, dropped by drop_oldest, taken and
  // being handled.
  [[nodiscard]] std::size_t mailbox_depth() const;
  [[nodiscard]] std::uint64_t dropped() const;
  [[nodiscard]] std::uint64_t in_flight() const;
  // Messages the host has taken from its mailbox since it was made (all
  // incarnations): the difference of two readings is a message rate.
  [[nodiscard]] std::uint64_t messages_taken() const;

  // <Host worker-1 pid 4242 running>
  [[nodiscard]] std::string to_string() const;

 private:
  friend struct detail::HostAccess;  // a supervisor forks a restarted host's next standby later
  ActorRef spawn_encoded(const std::string& type, const std::string& name, const detail::SpawnArgs& args);
  bool join_for(std::chrono::milliseconds timeout) const;
  void restart_host(bool standby_now);
  std::shared_ptr<detail::HostControl> control_;
};

std::ostream& operator<<(std::ostream& out, const Host& host);

// Spawns an actor in the calling process (its "local host", named
// "p<pid>"; a host process spawns into itself). The process gets a CAF actor
// system and a gateway thread on first use.
template <class... Args>
ActorRef spawn(const std::string& type, const std::string& name = "", const Args&... args);

namespace detail {
ActorRef spawn_here(const std::string& type, const std::string& name, const detail::SpawnArgs& args);
}

template <class... Args>
ActorRef spawn(const std::string& type, const std::string& name, const Args&... args) {
  return detail::spawn_here(type, name, detail::encode_spawn_args(args...));
}

}  // namespace mpx::actors
