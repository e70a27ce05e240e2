#include "mpx/detail/shared_mapping.hpp"

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

SharedMapping SharedMapping::anonymous(std::size_t size, const char* what) {
  return SharedMapping(map_or_throw(size, MAP_SHARED | MAP_ANONYMOUS, -1, what), size);
}

SharedMapping SharedMapping::reserved(std::size_t size, const char* what) {
  // A memfd is a tmpfs file created "no reserve": its pages are charged one
  // by one as they are first touched. The mapping keeps the file alive.
  int fd = ::memfd_create("mpx-ring", MFD_CLOEXEC);
  if (fd < 0) return SharedMapping(map_or_throw(size, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, what), size);
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
  ::close(fd);
  return SharedMapping(p, size);
}

SharedMapping SharedMapping::of_fd(int fd, std::size_t size, const char* what) {
  return SharedMapping(map_or_throw(size, MAP_SHARED, fd, what), size);
}

void SharedMapping::reset() noexcept {
  if (data_) ::munmap(data_, size_);
  data_ = nullptr;
  size_ = 0;
}

}  // namespace mpx::detail
