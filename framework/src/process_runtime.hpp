// Private to framework/src: the per-process runtime state behind Process,
// shared by the fork and forkserver start paths.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "mpx/detail/unique_fd.hpp"
#include "mpx/process.hpp"

namespace mpx::detail {

// One started child, as its parent sees it.
struct ChildState {
  std::string name;
  bool daemon = false;
  pid_t pid = 0;
  pid_t owner = 0;          // the process that started it: only it may wait
  UniqueFd pidfd;           // signals; and, for fork children, the wait
  UniqueFd status_fd;       // forkserver children: the server writes the wait status here
  pid_t server_pid = 0;     // forkserver children: the server that forked it
  std::mutex mutex;         // guards exitcode, status_lost and the reaping
  std::optional<int> exitcode;
  bool status_lost = false;  // ended, but someone else reaped it: exit code unknown
  std::optional<std::uint64_t> cpu_limit;  // ProcessLimits::cpu_seconds, named when SIGXCPU ends it

  ~ChildState();
  [[nodiscard]] int wait_fd() const { return status_fd ? status_fd.get() : pidfd.get(); }
  [[nodiscard]] bool ended() const { return exitcode || status_lost; }
};

// Who this process is and whom it started. One instance per process: a
// forked child replaces it with a fresh one (the parent's copy may have been
// locked by a thread that does not exist in the child).
struct Runtime {
  std::mutex mutex;  // guards children and child_counter
  std::vector<std::shared_ptr<ChildState>> children;  // started, not reaped
  int child_counter = 0;
  ProcessInfo self;
  std::optional<ProcessInfo> parent;
  UniqueFd parent_pidfd;  // in a child: readable once the parent has ended
  std::vector<int> identity;
  StartMethod start_method = StartMethod::fork;
  std::optional<std::thread::id> bootstrap_thread;  // set while an mpx child runs its target
};

Runtime& runtime();

// Everything a new child needs to know about itself.
struct ChildIdentity {
  std::string name;
  bool daemon = false;
  std::vector<int> identity;
  ProcessInfo parent;                // the process that asked for the child
  pid_t expected_ppid = 0;           // the process that forked it (the server, under forkserver)
  StartMethod start_method = StartMethod::fork;  // what get_start_method() reports in the child
  ProcessLimits limits;                          // applied by become_child
};

// In a freshly forked child: die with the parent, reset signals, fresh
// runtime and logging, apply the limits (exits with code 1 when it cannot).
// Single-threaded context.
void become_child(const ChildIdentity& who);
// Runs the child's body, reports its outcome, finalises its own children and
// _exits with the exit code. Never returns.
[[noreturn]] void run_child_and_exit(const std::function<void()>& body);

// The parent's side of a child it forked or spawned itself: a ChildState
// with the child's pidfd (waited with waitid). A child already reaped by a
// host's SIGCHLD handler is an ended child with an unknown exit code.
std::shared_ptr<ChildState> watch_direct_child(pid_t pid, const std::string& name);

// In a new, single-threaded child: the key its Process carried becomes
// current_process().authkey().
void adopt_authkey(const std::string& key);

// Terminates daemon children and joins the others (atexit and child end).
void finalize_children();
void ensure_atexit_registered();
void flush_std_streams();

// Fork server (forkserver.cpp).
void ensure_forkserver();
std::shared_ptr<ChildState> forkserver_start(const ChildIdentity& who, const RemoteCall& call,
                                             const std::string& authkey);
void close_forkserver_in_child();
// A worker's status pipe closed without a status: its server `server_pid`
// died. Reaps that server if it is the current one.
void forkserver_died(pid_t server_pid);

// Waiting on a process: exit code from a wait status.
int exitcode_from_status(int status);

}  // namespace mpx::detail
