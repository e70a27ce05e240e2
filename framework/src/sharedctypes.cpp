#include "mpx/sharedctypes.hpp"

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

void throw_index(const char* what, std::size_t index, std::size_t size) {
  throw SharedMemoryError(std::string(what) + ": index " + std::to_string(index) + " out of range [0, " +
                          std::to_string(size) + ")");
}

}  // namespace mpx::detail
