// mpx/detail/shared_mapping.hpp: an owned MAP_SHARED mapping.
//
// The one RAII type for "bytes several processes see": anonymous mappings
// (shared with children made by fork) and mappings of a named segment's fd
// (SharedMemory) both end up here. Move-only; unmaps on destruction.
#pragma once

#include <cstddef>
#include <span>
#include <utility>

namespace mpx::detail {

class SharedMapping {
 public:
  SharedMapping() = default;
  // Anonymous shared memory, zero-filled, inherited by forked children.
  // Both throw mpx::OSError (errno, size and `what` the memory was for).
  static SharedMapping anonymous(std::size_t size, const char* what = "shared memory");
  // Maps `size` bytes of `fd` read-write, shared. Does not take the fd.
  static SharedMapping of_fd(int fd, std::size_t size, const char* what = "a shared memory segment");
  // As anonymous(), for large mostly-unused reservations: backed by a memfd
  // (closed once mapped), so the system's commit charge (Committed_AS) grows
  // only with the pages touched, even under vm.overcommit_memory=2 (where
  // MAP_NORESERVE is ignored). Falls back to MAP_NORESERVE without memfd.
  static SharedMapping reserved(std::size_t size, const char* what = "shared memory");

  SharedMapping(SharedMapping&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  SharedMapping& operator=(SharedMapping&& other) noexcept {
    if (this != &other) {
      reset();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  SharedMapping(const SharedMapping&) = delete;
  SharedMapping& operator=(const SharedMapping&) = delete;
  ~SharedMapping() { reset(); }

  void reset() noexcept;
  [[nodiscard]] void* data() const { return data_; }
  [[nodiscard]] std::size_t size() const { return size_; }
  [[nodiscard]] std::span<std::byte> bytes() const { return {static_cast<std::byte*>(data_), size_}; }
  explicit operator bool() const { return data_ != nullptr; }

 private:
  SharedMapping(void* data, std::size_t size) : data_(data), size_(size) {}
  void* data_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace mpx::detail
