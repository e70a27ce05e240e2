#include "mpx/detail/shared_mapping.hpp"

#include <sys/mman.h>

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

SharedMapping SharedMapping::of_fd(int fd, std::size_t size, const char* what) {
  return SharedMapping(map_or_throw(size, MAP_SHARED, fd, what), size);
}

void SharedMapping::reset() noexcept {
  if (data_) ::munmap(data_, size_);
  data_ = nullptr;
  size_ = 0;
}

}  // namespace mpx::detail
