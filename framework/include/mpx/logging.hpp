// mpx/logging.hpp: the library's logger, as multiprocessing.get_logger().
//
// One spdlog logger named "mpx" writes to stderr. Every line carries the
// name and pid of the process that wrote it:
//     [2026-11-22 10:00:00.123] [info/Process-1 4242] process started
// A thread may add a label of its own (set_thread_log_label). Defaults to level `warn`: uncaught exceptions in children (level `error`)
// always reach stderr; lifecycle messages (started, exiting, exit code) are
// at `info` and appear after `log_to_stderr(spdlog::level::info)` or
// `get_logger()->set_level(spdlog::level::info)`.
//
// Fork safety: the logger's stderr sink writes each line with one write(2)
// (no stdio buffer, no FILE lock), and each child made by mpx re-creates the
// sink's mutex, which another thread of the parent may have held at the fork.
// Sinks a user adds to this logger get no such treatment: add them in the
// child, not before forking. Do not use spdlog's %t flag in patterns: the
// thread id spdlog caches is stale after fork.
//
// All functions are thread-safe.
#pragma once

#include <spdlog/spdlog.h>

#include <memory>
#include <optional>
#include <string>

namespace mpx {

// The library's logger; user code may log through it too.
std::shared_ptr<spdlog::logger> get_logger();

// Makes the logger write to stderr (it does by default) and, if given, sets
// its level. Returns the logger.
std::shared_ptr<spdlog::logger> log_to_stderr(std::optional<spdlog::level::level_enum> level = std::nullopt);

// Names what the calling thread is working for in the lines it writes, after
// the process: "[info/worker-1 4242 adder-1] ...". The pointee must outlive
// the label (reset it with nullptr). The actor layer labels each handler
// with its actor's name; any code may label its threads.
void set_thread_log_label(const std::string* label) noexcept;

namespace detail {
// Called in a freshly forked child, single-threaded: replaces the sinks.
void reset_logging_after_fork();
}  // namespace detail

}  // namespace mpx
