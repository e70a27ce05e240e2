#include "mpx/detail/sync_handle.hpp"

#include <string>

#include "mpx/detail/shared_mapping.hpp"
#include "mpx/shared_memory.hpp"

namespace mpx::detail {

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
