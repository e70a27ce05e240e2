// mpx/detail/shm_tracker.hpp: the client side of the shared-memory tracker.
//
// One tracker process per user (abstract unix socket
// "\0mpx-shm-tracker-<uid>"), started on demand by the first process that
// creates a tracked segment: double-forked, in its own session, ignoring
// SIGINT/SIGTERM/SIGHUP/SIGPIPE, all inherited descriptors closed. Every
// process talks to it over its own SOCK_SEQPACKET connection; a forked child
// inherits (and keeps, unused) its parent's connection, so the parent's
// registrations stay alive as long as any process holding that connection
// lives. The tracker unlinks a tracked segment when its last holding
// connection reaches EOF (all its holders exited or were killed), and exits
// itself 2 s after its last client disconnected. Requests are synchronous.
//
// The tracker's table (segments, holders, and each client's pid and start
// time) lives in a file-backed mapping, /dev/shm/.mpx-shm-tracker-<uid>, so
// that when the tracker itself is SIGKILLed the next one (started by the next
// process that needs it) recovers it: it watches the recorded holders that
// still live through pidfds and unlinks the segments nobody holds any more.
// The file is removed when the tracker exits normally. MPX_SHM_TRACKER_TAG
// (environment) selects a separate tracker, for tests.
#pragma once

#include <sys/types.h>

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

}  // namespace mpx::detail::shm_tracker
