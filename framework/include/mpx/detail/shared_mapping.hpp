// mpx/detail/shared_mapping.hpp: an owned MAP_SHARED mapping.
//
// The one RAII type for "bytes several processes see": anonymous mappings
// (shared with children made by fork) and mappings of a named segment's fd
// (SharedMemory) both end up here. Move-only; unmaps on destruction.
//
// Every mapping made here keeps the descriptor of the file behind it (a
// memfd for anonymous() and reserved(), the segment for of_fd()), closed
// with the mapping: fd() is what travels, by SCM_RIGHTS, when a primitive
// living in the mapping is passed to a forkserver child (fd_passing.hpp).
// The cost is one descriptor per mapping (per primitive).
#pragma once

#include <cstddef>
#include <span>
#include <utility>

namespace mpx::detail {

class SharedMapping {
 public:
  SharedMapping() = default;
  // Shared memory backed by a fresh memfd, zero-filled, inherited by forked
  // children. All three throw mpx::OSError (errno, size and `what` the
  // memory was for).
  static SharedMapping anonymous(std::size_t size, const char* what = "shared memory");
  // Maps `size` bytes of `fd` read-write, shared; keeps a duplicate of `fd`.
  static SharedMapping of_fd(int fd, std::size_t size, const char* what = "a shared memory segment");
  // As anonymous(), for large mostly-unused reservations: a memfd is
  // created "no reserve", so the system's commit charge (Committed_AS) grows
  // only with the pages touched, even under vm.overcommit_memory=2 (where
  // MAP_NORESERVE is ignored). (anonymous() is the same today; both names
  // stay for what the caller means.)
  static SharedMapping reserved(std::size_t size, const char* what = "shared memory");

  SharedMapping(SharedMapping&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)),
        size_(std::exchange(other.size_, 0)),
        fd_(std::exchange(other.fd_, -1)) {}
  SharedMapping& operator=(SharedMapping&& other) noexcept {
    if (this != &other) {
      reset();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
      fd_ = std::exchange(other.fd_, -1);
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
  // The file behind the mapping (owned by it); -1 when empty.
  [[nodiscard]] int fd() const { return fd_; }
  explicit operator bool() const { return data_ != nullptr; }

 private:
  SharedMapping(void* data, std::size_t size, int fd) : data_(data), size_(size), fd_(fd) {}
  void* data_ = nullptr;
  std::size_t size_ = 0;
  int fd_ = -1;
};

}  // namespace mpx::detail
