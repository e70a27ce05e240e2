#include "mpx/sharedctypes.hpp"

#include <atomic>
#include <cstring>

#include "mpx/lock.hpp"

namespace mpx::detail {

TypedBlock allocate_typed_block(std::int64_t count, std::size_t size, std::size_t align, bool with_lock,
                                const char* what) {
  if (count < 0) throw SharedMemoryError(std::string(what) + ": size must not be negative, got " + std::to_string(count));
  constexpr std::uint64_t kMaxBytes = std::uint64_t{1} << 40;
  if (size != 0 && static_cast<std::uint64_t>(count) > kMaxBytes / size)
    throw SharedMemoryError(std::string(what) + ": " + std::to_string(count) + " elements are too many");
  std::size_t header = with_lock ? RLock::shared_size : 0;
  if (align > header && header) header = align;
  std::size_t bytes = header + static_cast<std::size_t>(count) * size;
  Placement block = allocate_shared_block(bytes == 0 ? 1 : bytes);
  TypedBlock result;
  result.data = static_cast<std::byte*>(block.at) + header;
  result.count = static_cast<std::size_t>(count);
  if (with_lock) result.lock_at = Placement{block.keep, block.at};
  result.keep = std::move(block.keep);
  return result;
}

namespace {
struct PlacedHeader {
  std::uint32_t magic;
  std::uint32_t element_size;
  std::uint64_t count;
};
constexpr std::uint32_t kPlacedMagic = 0x5458504d;  // "MPXT"
}  // namespace

TypedBlock place_typed_block(const SharedMemory& shm, std::size_t offset, std::int64_t count, std::size_t size,
                             std::size_t align, bool create, const char* what) {
  if (align > 64) throw SharedMemoryError(std::string(what) + ": element alignment above 64 is not supported");
  if (count < 0) throw SharedMemoryError(std::string(what) + ": size must not be negative, got " + std::to_string(count));
  auto place = [&](std::size_t bytes) {
    try {
      return place_in(shm, offset, bytes, 64, what);
    } catch (const SyncError& e) {
      throw SharedMemoryError(e.what());
    }
  };
  Placement head = place(kPlacedHeader);
  auto* header = reinterpret_cast<PlacedHeader*>(static_cast<std::byte*>(head.at) + RLock::shared_size);
  std::atomic_ref<std::uint32_t> magic(header->magic);
  std::uint64_t n = static_cast<std::uint64_t>(count);
  if (create) {
    if (size != 0 && n > (std::uint64_t{1} << 40) / size)
      throw SharedMemoryError(std::string(what) + ": " + std::to_string(count) + " elements are too many");
    Placement all = place(kPlacedHeader + n * size);
    std::memset(all.at, 0, kPlacedHeader + n * size);
    (void)RLock::create_in(Placement{all.keep, all.at});
    header->element_size = static_cast<std::uint32_t>(size);
    header->count = n;
    magic.store(kPlacedMagic, std::memory_order_release);
  } else {
    if (magic.load(std::memory_order_acquire) != kPlacedMagic)
      throw SharedMemoryError(std::string(what) + ": nothing was created at offset " + std::to_string(offset) +
                              " of '" + shm.name() + "' (create_at() it first)");
    if (header->element_size != size)
      throw SharedMemoryError(std::string(what) + ": element size " + std::to_string(size) + " does not match the " +
                              std::to_string(header->element_size) + " bytes recorded in '" + shm.name() + "'");
    n = header->count;
    (void)place(kPlacedHeader + n * size);  // bounds
  }
  TypedBlock result;
  result.data = static_cast<std::byte*>(head.at) + kPlacedHeader;
  result.count = static_cast<std::size_t>(n);
  result.lock_at = Placement{head.keep, head.at};
  result.keep = std::move(head.keep);
  return result;
}

void throw_index(const char* what, std::size_t index, std::size_t size) {
  throw SharedMemoryError(std::string(what) + ": index " + std::to_string(index) + " out of range [0, " +
                          std::to_string(size) + ")");
}

}  // namespace mpx::detail
