#include "mpx/detail/sync_handle.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include "mpx/detail/fd_passing.hpp"
#include "mpx/detail/shared_mapping.hpp"
#include "mpx/shared_memory.hpp"

namespace mpx::detail {

namespace {
thread_local FdSendScope* t_send = nullptr;
thread_local FdReceiveScope* t_receive = nullptr;

[[noreturn]] void throw_not_passing(const char* what) {
  throw SyncError(std::string(what) +
                  " can cross processes only by inheritance (fork) or as an argument of a process started with "
                  "forkserver, not inside a message");
}
}  // namespace

FdSendScope::FdSendScope() : previous_(t_send) { t_send = this; }
FdSendScope::~FdSendScope() { t_send = previous_; }

FdReceiveScope::FdReceiveScope(std::vector<UniqueFd>& fds)
    : fds_(fds), mappings_(fds.size()), previous_(t_receive) {
  t_receive = this;
}
FdReceiveScope::~FdReceiveScope() {
  t_receive = previous_;
  fds_.clear();  // the mappings and load()ed descriptors hold their own
}

std::uint32_t send_fd(int fd, const char* what) {
  if (!t_send) throw_not_passing(what);
  if (fd < 0) throw SyncError(std::string(what) + ": no descriptor to pass (closed or moved-from)");
  auto& fds = t_send->fds_;
  auto it = std::find(fds.begin(), fds.end(), fd);
  if (it != fds.end()) return static_cast<std::uint32_t>(it - fds.begin());
  if (fds.size() >= kMaxPassedFds)
    throw SyncError(std::string(what) + ": more than " + std::to_string(kMaxPassedFds) +
                    " descriptors in one process' arguments");
  fds.push_back(fd);
  return static_cast<std::uint32_t>(fds.size() - 1);
}

namespace {
void check_received(std::uint32_t index, std::size_t count, const char* what) {
  if (index >= count)
    throw SyncError(std::string(what) + ": descriptor " + std::to_string(index) + " of " + std::to_string(count) +
                    " was not received");
}
}  // namespace

std::shared_ptr<SharedMapping> receive_mapping(std::uint32_t index, const char* what) {
  if (!t_receive) throw_not_passing(what);
  auto& scope = *t_receive;
  check_received(index, scope.fds_.size(), what);
  auto& cached = scope.mappings_[index];
  if (cached) return cached;
  struct stat st {};
  if (::fstat(scope.fds_[index].get(), &st) != 0)
    throw OSError(errno, std::string(what) + ": fstat of a received descriptor");
  if (st.st_size <= 0) throw SyncError(std::string(what) + ": the received memory is empty");
  cached = std::make_shared<SharedMapping>(
      SharedMapping::of_fd(scope.fds_[index].get(), static_cast<std::size_t>(st.st_size), what));
  return cached;
}

UniqueFd receive_fd(std::uint32_t index, const char* what) {
  if (!t_receive) throw_not_passing(what);
  auto& scope = *t_receive;
  check_received(index, scope.fds_.size(), what);
  UniqueFd fd(::fcntl(scope.fds_[index].get(), F_DUPFD_CLOEXEC, 0));
  if (!fd) throw OSError(errno, std::string(what) + ": dup of a received descriptor");
  return fd;
}

PassedPlacement send_placement(const std::shared_ptr<void>& keep, const void* at, std::size_t size,
                               const char* what) {
  if (!keep || !at) throw_no_state(what);
  const auto& mapping = *static_cast<const SharedMapping*>(keep.get());
  PassedPlacement passed;
  passed.fd_index = send_fd(mapping.fd(), what);
  passed.offset = static_cast<std::uint64_t>(static_cast<const std::byte*>(at) -
                                             static_cast<const std::byte*>(mapping.data()));
  passed.size = size;
  return passed;
}

Placement receive_placement(const PassedPlacement& passed, const char* what) {
  auto mapping = receive_mapping(passed.fd_index, what);
  if (passed.offset > mapping->size() || mapping->size() - passed.offset < passed.size)
    throw SyncError(std::string(what) + ": " + std::to_string(passed.size) + " bytes at offset " +
                    std::to_string(passed.offset) + " do not fit in the received memory of " +
                    std::to_string(mapping->size()) + " bytes");
  void* at = static_cast<std::byte*>(mapping->data()) + passed.offset;
  return Placement{std::move(mapping), at};
}

// ---- SCM_RIGHTS --------------------------------------------------------------

namespace {
// Room for the most descriptors one message carries.
constexpr std::size_t kControlBytes = CMSG_SPACE(sizeof(int) * kMaxPassedFds);
}  // namespace

void send_with_fds(int socket, std::span<const std::byte> data, std::span<const int> fds) {
  if (fds.size() > kMaxPassedFds)
    throw OSError(EINVAL, "sendmsg of " + std::to_string(fds.size()) + " descriptors (at most " +
                              std::to_string(kMaxPassedFds) + ")");
  iovec iov{const_cast<std::byte*>(data.data()), data.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[kControlBytes]{};
  if (!fds.empty()) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
    std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  }
  ssize_t n;
  do n = ::sendmsg(socket, &msg, MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  if (n < 0) throw OSError(errno, "sendmsg with descriptors");
  if (static_cast<std::size_t>(n) != data.size())
    throw OSError(EMSGSIZE, "sendmsg with descriptors sent " + std::to_string(n) + " of " +
                                std::to_string(data.size()) + " bytes");
}

std::size_t receive_with_fds(int socket, std::span<std::byte> buffer, std::vector<UniqueFd>& fds,
                             std::size_t max_fds) {
  fds.clear();
  if (max_fds > kMaxPassedFds) max_fds = kMaxPassedFds;
  iovec iov{buffer.data(), buffer.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[kControlBytes]{};
  msg.msg_control = control;
  // CMSG_SPACE may leave room for one more descriptor: counted below.
  msg.msg_controllen = CMSG_SPACE(sizeof(int) * max_fds);
  ssize_t n;
  do n = ::recvmsg(socket, &msg, MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (n < 0) throw OSError(errno, "recvmsg with descriptors");
  // Owned at once, so that every way out below closes them.
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      fds.emplace_back(fd);
    }
  }
  const bool truncated = (msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0 || fds.size() > max_fds;
  if (truncated) {
    fds.clear();
    throw OSError(EMSGSIZE, "recvmsg: the message or its descriptors were truncated (room for " +
                                std::to_string(buffer.size()) + " bytes and " + std::to_string(max_fds) +
                                " descriptors)");
  }
  return static_cast<std::size_t>(n);
}

std::optional<std::size_t> receive_with_fds(int socket, std::span<std::byte> buffer, std::vector<UniqueFd>& fds,
                                            std::size_t max_fds, const Deadline& deadline) {
  if (!wait_readable(socket, deadline)) {
    fds.clear();
    return std::nullopt;
  }
  return receive_with_fds(socket, buffer, fds, max_fds);
}

bool wait_readable(int fd, const Deadline& deadline) {
  pollfd p{fd, POLLIN, 0};
  int rc;
  do rc = ::poll(&p, 1, deadline.poll_timeout_ms());
  while (rc < 0 && errno == EINTR);
  return rc > 0;
}

Placement allocate_shared_block(std::size_t size) {
  auto mapping = std::make_shared<SharedMapping>(SharedMapping::anonymous(size, "a synchronisation primitive"));
  void* at = mapping->data();
  return Placement{std::move(mapping), at};
}

Placement place_in(const SharedMemory& shm, std::size_t offset, std::size_t size, std::size_t align,
                   const char* what) {
  if (!shm.mapping_)
    throw SyncError(std::string(what) + ": SharedMemory '" + shm.name() + "' is closed (its memory may be unmapped)");
  if (offset % align != 0)
    throw SyncError(std::string(what) + ": offset " + std::to_string(offset) + " is not a multiple of " +
                    std::to_string(align));
  if (offset > shm.size_ || shm.size_ - offset < size)
    throw SyncError(std::string(what) + ": " + std::to_string(size) + " bytes at offset " + std::to_string(offset) +
                    " do not fit in SharedMemory '" + shm.name() + "' of " + std::to_string(shm.size_) + " bytes");
  // The placement shares ownership of the mapping: close() on the
  // SharedMemory cannot unmap it under this primitive.
  std::shared_ptr<void> keep = shm.mapping_;
  return Placement{std::move(keep), static_cast<std::byte*>(shm.mapping_->data()) + offset};
}

void throw_no_state(const char* what) {
  throw SyncError(std::string(what) + ": this handle has no shared state (moved-from)");
}

}  // namespace mpx::detail
