// mpx/detail/identity.hpp: who the calling thread is, cheaply, and whether
// another thread is still alive.
//
// getpid()/gettid() are system calls (glibc no longer caches them), too slow
// for a lock's fast path, so the values are cached per process / per thread
// and refreshed in the child by a pthread_atfork handler (every fork through
// glibc's fork() runs it). owner_gone() is the slow-path liveness probe the
// robust lock uses on a blocked acquire.
#pragma once

#include <sys/types.h>

#include <cstdint>

namespace mpx::detail {

// This process' pid (cached).
[[nodiscard]] pid_t current_pid() noexcept;
// This thread's kernel tid (cached per thread); the main thread's is the pid.
[[nodiscard]] pid_t current_tid() noexcept;

// A number that tells apart the tasks that carried the same tid since boot:
// the pidfs inode number of the task (Linux >= 6.9: unique per task, read
// through pidfd_open(tid, PIDFD_THREAD)), tagged with bit 63; where pidfs is
// missing, its start time in clock ticks (/proc/<tid>/stat field 22; a tid
// recycled within the same tick, 10 ms, is then not told apart). 0 when
// neither can be read (gone, /proc not mounted, no descriptor left).
// Only system calls: safe in the shm tracker and in a child of fork().
[[nodiscard]] std::uint64_t task_marker(pid_t tid) noexcept;

// An identity that survives tid reuse: (tid << 32) | the low 32 bits of a
// folded task_marker (bit 31: the pidfs kind; bits 0..30 its value). The low
// half is 0 when no marker could be read.
[[nodiscard]] std::uint64_t current_thread_ident() noexcept;

// The same for this process: (pid << 32) | the folded task_marker of the pid
// (its main thread's task). Cached, refreshed by fork. For owner_gone(pid, ident).
[[nodiscard]] std::uint64_t current_process_ident() noexcept;

// Reads /proc/<tid>/stat (a pid is a tid too): the state letter (field 3) and
// the start time (field 22). False when it cannot be read or parsed (gone, or
// /proc not mounted). Only system calls and string functions, no allocation:
// safe in the shm tracker and in a child of fork().
[[nodiscard]] bool read_proc_stat(pid_t tid, char& state, std::uint64_t& start) noexcept;

// True when thread `tid` has certainly ended: it does not exist, is a zombie,
// or (when `ident` names the same tid with a known marker) a different task
// now carries that number. False when it is alive or unknown.
[[nodiscard]] bool owner_gone(pid_t tid, std::uint64_t ident) noexcept;

}  // namespace mpx::detail
