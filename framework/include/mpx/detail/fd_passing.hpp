// mpx/detail/fd_passing.hpp: descriptors that travel with a forkserver
// child's arguments, as Python's reduction (DupFd) sends them.
//
// A primitive (Lock, Value, Queue, a Pipe end...) is shared memory or a
// descriptor; its serialization writes only an index into a side list of
// descriptors, which the fork server receives with the request (SCM_RIGHTS)
// and hands to the worker it forks:
//   - Process::start() (forkserver) encodes the arguments inside a
//     FdSendScope; save() functions call send_fd(), which collects (and
//     de-duplicates) descriptors borrowed from the primitives, which the
//     Process keeps alive.
//   - The worker decodes inside a FdReceiveScope over the received
//     descriptors; load() functions call receive_mapping() (maps the
//     descriptor; one mapping per index however many primitives live in it)
//     or receive_fd() (a duplicate). The scope closes the received
//     descriptors when it ends, before the target runs: nothing leaks.
// Outside these scopes (putting a Lock into a Queue, encode(lock)) send_fd
// and receive_* throw SyncError: primitives cross processes only by
// inheritance or as process arguments, as in Python.
// Scopes are per thread and do not nest.
//
// Below them, the one implementation of SCM_RIGHTS over a Unix socket
// (send_with_fds, receive_with_fds): the fork server's requests and replies,
// and the manager's channel memfd for a local client.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "mpx/detail/deadline.hpp"
#include "mpx/detail/sync_handle.hpp"
#include "mpx/detail/unique_fd.hpp"

namespace mpx::detail {

class SharedMapping;

// At most this many descriptors per process start (the kernel's SCM_MAX_FD).
inline constexpr std::size_t kMaxPassedFds = 253;

class FdSendScope {
 public:
  FdSendScope();
  ~FdSendScope();
  FdSendScope(const FdSendScope&) = delete;
  FdSendScope& operator=(const FdSendScope&) = delete;
  // The descriptors collected so far, in index order (borrowed, not owned).
  [[nodiscard]] const std::vector<int>& fds() const { return fds_; }

 private:
  friend std::uint32_t send_fd(int fd, const char* what);
  std::vector<int> fds_;
  FdSendScope* previous_;
};

class FdReceiveScope {
 public:
  explicit FdReceiveScope(std::vector<UniqueFd>& fds);
  ~FdReceiveScope();
  FdReceiveScope(const FdReceiveScope&) = delete;
  FdReceiveScope& operator=(const FdReceiveScope&) = delete;

 private:
  friend std::shared_ptr<SharedMapping> receive_mapping(std::uint32_t index, const char* what);
  friend UniqueFd receive_fd(std::uint32_t index, const char* what);
  std::vector<UniqueFd>& fds_;
  std::vector<std::shared_ptr<SharedMapping>> mappings_;
  FdReceiveScope* previous_;
};

// In save(): the index under which `fd` travels (SyncError outside a
// FdSendScope, or past kMaxPassedFds descriptors; `what` names the primitive).
[[nodiscard]] std::uint32_t send_fd(int fd, const char* what);
// In load(): the whole file at `index`, mapped shared (cached per index).
[[nodiscard]] std::shared_ptr<SharedMapping> receive_mapping(std::uint32_t index, const char* what);
// In load(): a duplicate of the descriptor at `index`, owned by the caller.
[[nodiscard]] UniqueFd receive_fd(std::uint32_t index, const char* what);

// PassedPlacement (sync_handle.hpp): where a placement is, as it travels.
// `keep` must be the SharedMapping a Placement keeps (sync_handle.hpp).
[[nodiscard]] PassedPlacement send_placement(const std::shared_ptr<void>& keep, const void* at, std::size_t size,
                                             const char* what);
[[nodiscard]] Placement receive_placement(const PassedPlacement& passed, const char* what);

// ---- SCM_RIGHTS over a Unix socket ------------------------------------------
// Errors are OSError (mpx/sync_error.hpp); code() is the errno.

// Sends `data` in one sendmsg with `fds` attached (borrowed: the caller keeps
// them open), without SIGPIPE, retrying on EINTR. Throws OSError with the
// errno of sendmsg (EPIPE or ECONNRESET: the peer is gone), EINVAL for more
// than kMaxPassedFds descriptors, EMSGSIZE when a stream socket took only
// part of `data` (keep it small there: a byte).
void send_with_fds(int socket, std::span<const std::byte> data, std::span<const int> fds);

// Receives one message (a datagram, or what a stream socket has, up to
// buffer.size() bytes) and at most `max_fds` (<= kMaxPassedFds) descriptors,
// which replace the content of `fds`: owned, close-on-exec, in the order
// sent. Returns the bytes received, 0 at end of file. Retries on EINTR.
// Throws OSError with the errno of recvmsg, or EMSGSIZE when more than
// `max_fds` descriptors came (MSG_CTRUNC) or a datagram did not fit
// `buffer` (MSG_TRUNC): then every descriptor that came is closed.
std::size_t receive_with_fds(int socket, std::span<std::byte> buffer, std::vector<UniqueFd>& fds,
                             std::size_t max_fds = kMaxPassedFds);
// The same, waiting at most until `deadline` for a message: nullopt (and
// `fds` emptied) when none came by then.
std::optional<std::size_t> receive_with_fds(int socket, std::span<std::byte> buffer, std::vector<UniqueFd>& fds,
                                            std::size_t max_fds, const Deadline& deadline);

// Whether `fd` is readable (data, end of file, an error; a pidfd: its process
// ended) by `deadline`; false too when poll itself fails. Retries on EINTR.
bool wait_readable(int fd, const Deadline& deadline);
template <class Rep, class Period>
bool wait_readable(int fd, std::chrono::duration<Rep, Period> timeout) {
  return wait_readable(fd, Deadline::after(timeout));
}

}  // namespace mpx::detail
