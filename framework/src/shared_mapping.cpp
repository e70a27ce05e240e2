#include "mpx/detail/shared_mapping.hpp"

#include <sys/mman.h>

#include <cerrno>
#include <system_error>

namespace mpx::detail {

namespace {
void* map_or_throw(std::size_t size, int flags, int fd) {
  void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, flags, fd, 0);
  if (p == MAP_FAILED) throw std::system_error(errno, std::generic_category(), "mmap");
  return p;
}
}  // namespace

SharedMapping SharedMapping::anonymous(std::size_t size) {
  return SharedMapping(map_or_throw(size, MAP_SHARED | MAP_ANONYMOUS, -1), size);
}

SharedMapping SharedMapping::of_fd(int fd, std::size_t size) {
  return SharedMapping(map_or_throw(size, MAP_SHARED, fd), size);
}

void SharedMapping::reset() noexcept {
  if (data_) ::munmap(data_, size_);
  data_ = nullptr;
  size_ = 0;
}

}  // namespace mpx::detail
