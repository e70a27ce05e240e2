// mpx/detail/shm_tracker.hpp: the client side of the shared-memory tracker.
//
// One tracker process per user and network namespace (abstract unix socket
// "\0mpx-shm-tracker-<uid>", which is per namespace), started on demand by the first process that
// creates a tracked segment: double-forked, in its own session, ignoring
// SIGINT/SIGTERM/SIGHUP/SIGPIPE, all inherited descriptors closed. Every
// process talks to it over its own SOCK_SEQPACKET connection; a forked child
// inherits (and keeps, unused) its parent's connection, so the parent's
// registrations stay alive as long as any process holding that connection
// lives. The tracker unlinks a tracked segment when its last holding
// connection reaches EOF (all its holders exited or were killed), and exits
// itself 2 s after its last client disconnected. Requests are synchronous.
//
// Bounded: each call below bounds its whole exchange with the tracker
// (connecting, the reply, a reconnection after the tracker died) by the reply
// timeout, 10 s by default. A tracker that does not answer in time (stopped,
// e.g. SIGSTOP, or starved) makes register_created throw SharedMemoryError
// saying so; the noexcept calls then give up silently (the segment is just
// not protected by this process). This process keeps its connection and its
// registrations: the late reply is discarded when it comes, and once the
// tracker runs again (SIGCONT) the next call is served by it as before.
//
// Descriptors: the tracker raises its soft RLIMIT_NOFILE to the hard limit
// when it starts (its starter's soft limit may be low). A client it cannot
// take (out of descriptors all the same, 1024 processes served already, or
// another user) is refused, never left queued: the tracker accepts it (out of
// descriptors: with a spare one kept for that), replies with the reason and
// closes. That process' register_created throws SharedMemoryError naming the
// reason; running out of descriptors is also logged once per process (a
// warning, mpx/logging.hpp). The tracker itself never logs: its stderr is
// /dev/null.
//
// The tracker's table (segments, holders, and each client's pid and start
// time) lives in a file-backed mapping, /dev/shm/.mpx-shm-tracker-<uid>, so
// that when the tracker itself is SIGKILLed the next one (started by the next
// process that needs it) recovers it: it watches the recorded holders that
// still live through pidfds and unlinks the segments nobody holds any more.
// /dev/shm is shared across network namespaces while the socket is not: the
// file is locked (flock) by the tracker that opened it for as long as it
// runs; a tracker of another namespace that finds it locked keeps a private
// table (not recovered after its own crash) and never touches the file. The
// owner removes the file when it exits normally. MPX_SHM_TRACKER_TAG
// (environment) selects a separate tracker, for tests.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <string>

namespace mpx::detail::shm_tracker {

// `object` is the POSIX name with its leading '/'.
// This process created `object` (inode dev/ino): unlink it when no holder is left.
// Starts the tracker if none runs. Throws SharedMemoryError on failure.
void register_created(const std::string& object, dev_t dev, ino_t ino);
// This process is about to attach `object`: keep it while we live. A no-op
// when no tracker runs (then nothing of ours tracks it). Never throws.
void register_attached(const std::string& object) noexcept;
// Undo register_attached after a failed attach. Never throws.
void forget(const std::string& object) noexcept;
// `object` was unlinked by this process: stop tracking it. Never throws.
void unlinked(const std::string& object) noexcept;
// The tracker's pid, 0 when none runs (for tests and diagnostics).
[[nodiscard]] pid_t tracker_pid() noexcept;
// Sets the reply timeout (see "Bounded" above) for this process and the
// children it forks afterwards; for tests. Default 10 s.
void set_reply_timeout(std::chrono::milliseconds timeout) noexcept;

}  // namespace mpx::detail::shm_tracker
