#include "mpx/detail/shared_mapping.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "mpx/sync_error.hpp"

namespace mpx::detail {

namespace {
void* map_or_throw(std::size_t size, int flags, int fd, const char* what) {
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, flags, fd, 0);
  if (p == MAP_FAILED)
    throw OSError(errno, std::string("mpx: mmap of ") + std::to_string(size) + " bytes for " + what);
  return p;
}
}  // namespace

SharedMapping SharedMapping::anonymous(std::size_t size, const char* what) { return reserved(size, what); }

SharedMapping SharedMapping::reserved(std::size_t size, const char* what) {
  // A memfd is a tmpfs file created "no reserve": its pages are charged one
  // by one as they are first touched. Its descriptor is kept: it is how the
  // memory reaches a process that was not forked from this one.
  int fd = ::memfd_create("mpx", MFD_CLOEXEC);
  if (fd < 0) throw OSError(errno, std::string("mpx: memfd_create for ") + what);
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) {
    const int err = errno;
    ::close(fd);
    throw OSError(err, std::string("mpx: ftruncate of a memfd to ") + std::to_string(size) + " bytes for " + what);
  }
  void* p = nullptr;
  try {
    p = map_or_throw(size, MAP_SHARED, fd, what);
  } catch (...) {
    ::close(fd);
    throw;
  }
  return SharedMapping(p, size, fd);
}

SharedMapping SharedMapping::of_fd(int fd, std::size_t size, const char* what) {
  int own = ::fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (own < 0) throw OSError(errno, std::string("mpx: dup of the descriptor of ") + what);
  void* p = nullptr;
  try {
    p = map_or_throw(size, MAP_SHARED, own, what);
  } catch (...) {
    ::close(own);
    throw;
  }
  return SharedMapping(p, size, own);
}

void SharedMapping::reset() noexcept {
  if (data_) ::munmap(data_, size_);
  if (fd_ >= 0) ::close(fd_);
  data_ = nullptr;
  size_ = 0;
  fd_ = -1;
}

}  // namespace mpx::detail
