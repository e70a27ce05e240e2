// mpx/sharedctypes.hpp: Value<T>, Array<T>, RawValue<T>, RawArray<T> in shared
// memory, as multiprocessing.Value / Array / RawValue / RawArray.
//
//     mpx::Value<int> v(10);                    // Python: Value('i', 10)
//     mpx::Array<int> a(std::views::iota(0, 10)); // Python: Array('i', range(10))
//     // in a child started after: v.set_value(20); a.set(0, 5);
//     { std::lock_guard g(v.get_lock()); ++v.get_obj(); }   // compound update
//
// T must be trivially copyable (its bytes are its value in every process).
// The memory is a MAP_SHARED mapping of its own (a memfd): shared with children forked
// after construction (the Python way); handles are cheap references (copies
// share the memory), which stays mapped while a handle in this process
// refers to it.
//
// Value/Array are synchronised: value(), set_value(), get(), set(),
// to_vector() each take get_lock(), a process-shared RLock (Python's
// default, so they may be called while holding get_lock()). Compound
// updates take get_lock() themselves and use get_obj() (raw access). If a
// process died holding the lock, these accessors release it and throw
// OwnerDeadError (see mpx/lock.hpp); take get_lock() yourself to repair.
// RawValue/RawArray have no lock, for raw speed: synchronise yourself (or use
// std::atomic_ref on get_obj()).
// Value and Array can also live in a named SharedMemory (create_at() /
// attach_at()), for processes that attach to it by name.
// Passing: all four can be arguments of a process started with forkserver
// (save/load below): the child maps the same memory through a descriptor
// sent with the request (mpx/detail/fd_passing.hpp), lock included.
// Errors: SharedMemoryError for a negative or too large size, an index out
// of range, a bad placement; SyncError for a moved-from handle.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <iterator>
#include <memory>
#include <new>
#include <algorithm>
#include <mutex>
#include <ranges>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "mpx/detail/fd_passing.hpp"
#include "mpx/detail/sync_handle.hpp"
#include "mpx/lock.hpp"
#include "mpx/shared_memory.hpp"

namespace mpx {

template <class T>
concept SharedCType = std::is_trivially_copyable_v<T> && std::is_default_constructible_v<T>;

namespace detail {

// A new anonymous block: an RLock's state (if with_lock) followed by `count`
// objects of `size` bytes aligned to `align`, zero-filled. Throws
// SharedMemoryError for a negative or overflowing count.
struct TypedBlock {
  std::shared_ptr<void> keep;
  std::byte* data = nullptr;
  std::size_t count = 0;
  Placement lock_at;  // empty unless with_lock
};
[[nodiscard]] TypedBlock allocate_typed_block(std::int64_t count, std::size_t size, std::size_t align, bool with_lock,
                                              const char* what);
// The same inside a named SharedMemory at `offset` (a multiple of 64):
// [RLock state: 64 bytes][header: magic, element size, count][elements at +128].
// create writes the RLock and the header (zero-filled elements); attach
// checks the header against `size` and returns the recorded count.
inline constexpr std::size_t kPlacedHeader = 128;
[[nodiscard]] TypedBlock place_typed_block(const SharedMemory& shm, std::size_t offset, std::int64_t count,
                                           std::size_t size, std::size_t align, bool create, const char* what);
[[noreturn]] void throw_index(const char* what, std::size_t index, std::size_t size);

// Takes `lock` for one accessor; on OwnerDeadError releases and rethrows.
class AccessorGuard {
 public:
  explicit AccessorGuard(RLock& lock) : lock_(lock) {
    if (lock_.acquire_status() == LockStatus::owner_died) {
      lock_.release();
      throw_owner_dead("Value/Array lock", 0);
    }
  }
  AccessorGuard(const AccessorGuard&) = delete;
  AccessorGuard& operator=(const AccessorGuard&) = delete;
  ~AccessorGuard() { lock_.release(); }

 private:
  RLock& lock_;
};

// On arrival in a forkserver child: the received memory, checked for T's alignment.
template <class T>
void arrive(const PassedPlacement& passed, std::shared_ptr<void>& keep, T*& ptr, const char* what) {
  if (passed.offset % alignof(T) != 0) throw SyncError(std::string(what) + ": misaligned received memory");
  Placement p = receive_placement(passed, what);
  keep = std::move(p.keep);
  ptr = static_cast<T*>(p.at);
}

template <class T, class R>
std::vector<T> to_vector_of(R&& range) {
  std::vector<T> values;
  for (auto&& x : range) values.push_back(static_cast<T>(x));
  return values;
}

}  // namespace detail

template <SharedCType T>
class RawValue {
 public:
  RawValue() : RawValue(T{}) {}
  explicit RawValue(const T& initial) {
    auto block = detail::allocate_typed_block(1, sizeof(T), alignof(T), false, "RawValue");
    keep_ = std::move(block.keep);
    ptr_ = ::new (block.data) T(initial);
  }
  [[nodiscard]] T value() const { return obj(); }
  void set_value(const T& v) const { obj() = v; }
  // The shared object itself.
  [[nodiscard]] T& get_obj() const { return obj(); }
  [[nodiscard]] T& operator*() const { return obj(); }

  // Only as a forkserver child's argument (see the top of this file).
  template <class Archive>
  void save(Archive& ar) const {
    ar(detail::send_placement(keep_, ptr_, sizeof(T), "RawValue"));
  }
  template <class Archive>
  void load(Archive& ar) {
    detail::PassedPlacement p;
    ar(p);
    detail::arrive(p, keep_, ptr_, "RawValue");
  }

 private:
  T& obj() const {
    if (!ptr_) detail::throw_no_state("RawValue");
    return *ptr_;
  }
  std::shared_ptr<void> keep_;
  T* ptr_ = nullptr;
};

template <SharedCType T>
class Value {
 public:
  Value() : Value(T{}) {}
  explicit Value(const T& initial) {
    auto block = detail::allocate_typed_block(1, sizeof(T), alignof(T), true, "Value");
    lock_ = RLock::create_in(std::move(block.lock_at));
    keep_ = std::move(block.keep);
    ptr_ = ::new (block.data) T(initial);
  }
  // In a named SharedMemory, for processes that attach to it by name:
  // create_at() in one, attach_at() (same offset, same T) in the others.
  // Needs shared_size() bytes at `offset`, a multiple of 64. Throws
  // SharedMemoryError for a bad offset or when no Value<T> is there.
  [[nodiscard]] static Value create_at(const SharedMemory& shm, std::size_t offset, const T& initial = T{}) {
    Value v(detail::place_typed_block(shm, offset, 1, sizeof(T), alignof(T), true, "Value"));
    ::new (v.ptr_) T(initial);
    return v;
  }
  [[nodiscard]] static Value attach_at(const SharedMemory& shm, std::size_t offset) {
    return Value(detail::place_typed_block(shm, offset, 1, sizeof(T), alignof(T), false, "Value"));
  }
  [[nodiscard]] static constexpr std::size_t shared_size() { return detail::kPlacedHeader + sizeof(T); }

  // Guarded by an existing lock (Python: Value(typecode, v, lock=rlock)).
  Value(const T& initial, RLock lock) : lock_(std::move(lock)) {
    auto block = detail::allocate_typed_block(1, sizeof(T), alignof(T), false, "Value");
    keep_ = std::move(block.keep);
    ptr_ = ::new (block.data) T(initial);
  }

  [[nodiscard]] T value() const {
    detail::AccessorGuard g(lock_);
    return obj();
  }
  void set_value(const T& v) const {
    detail::AccessorGuard g(lock_);
    obj() = v;
  }
  // The process-shared lock guarding the value.
  [[nodiscard]] RLock& get_lock() const { return lock_; }
  // The shared object, unguarded: use under get_lock().
  [[nodiscard]] T& get_obj() const { return obj(); }

  // Only as a forkserver child's argument (see the top of this file).
  template <class Archive>
  void save(Archive& ar) const {
    ar(lock_, detail::send_placement(keep_, ptr_, sizeof(T), "Value"));
  }
  template <class Archive>
  void load(Archive& ar) {
    detail::PassedPlacement p;
    ar(lock_, p);
    detail::arrive(p, keep_, ptr_, "Value");
  }

 private:
  explicit Value(detail::TypedBlock block)
      : lock_(RLock::create_in_or_attach(std::move(block.lock_at))),
        keep_(std::move(block.keep)),
        ptr_(reinterpret_cast<T*>(block.data)) {}
  T& obj() const {
    if (!ptr_) detail::throw_no_state("Value");
    return *ptr_;
  }
  mutable RLock lock_;
  std::shared_ptr<void> keep_;
  T* ptr_ = nullptr;
};

template <SharedCType T>
class RawArray {
 public:
  // `size` zero-initialised elements (Python: RawArray('i', 10)).
  explicit RawArray(std::int64_t size) { init(size); }
  // Empty; what a forkserver child's argument is decoded into.
  RawArray() : RawArray(std::int64_t{0}) {}
  RawArray(std::initializer_list<T> values) : RawArray(std::span<const T>(values.begin(), values.size())) {}
  template <std::ranges::input_range R>
    requires std::convertible_to<std::ranges::range_reference_t<R>, T>
  explicit RawArray(R&& values) {
    auto v = detail::to_vector_of<T>(std::forward<R>(values));
    init(static_cast<std::int64_t>(v.size()));
    std::copy(v.begin(), v.end(), ptr_);
  }

  [[nodiscard]] std::size_t size() const { return size_; }
  // Unchecked, as a C array.
  [[nodiscard]] T& operator[](std::size_t i) const { return ptr_[i]; }
  [[nodiscard]] std::span<T> get_obj() const { return {ptr_, size_}; }
  [[nodiscard]] std::vector<T> to_vector() const { return {ptr_, ptr_ + size_}; }

  // Only as a forkserver child's argument (see the top of this file).
  template <class Archive>
  void save(Archive& ar) const {
    ar(static_cast<std::uint64_t>(size_), detail::send_placement(keep_, ptr_, size_ * sizeof(T), "RawArray"));
  }
  template <class Archive>
  void load(Archive& ar) {
    std::uint64_t size = 0;
    detail::PassedPlacement p;
    ar(size, p);
    if (p.size != size * sizeof(T)) throw SyncError("RawArray: received size does not match its element type");
    detail::arrive(p, keep_, ptr_, "RawArray");
    size_ = static_cast<std::size_t>(size);
  }

 private:
  void init(std::int64_t size) {
    auto block = detail::allocate_typed_block(size, sizeof(T), alignof(T), false, "RawArray");
    keep_ = std::move(block.keep);
    size_ = block.count;
    ptr_ = reinterpret_cast<T*>(block.data);
    for (std::size_t i = 0; i < size_; ++i) ::new (ptr_ + i) T();
  }
  std::shared_ptr<void> keep_;
  T* ptr_ = nullptr;
  std::size_t size_ = 0;
};

template <SharedCType T>
class Array {
 public:
  // `size` zero-initialised elements (Python: Array('i', 10)).
  explicit Array(std::int64_t size) { init(size); }
  // Empty; what a forkserver child's argument is decoded into.
  Array() : Array(std::int64_t{0}) {}
  Array(std::initializer_list<T> values) { assign(std::vector<T>(values)); }
  // Python: Array('i', range(10)).
  template <std::ranges::input_range R>
    requires std::convertible_to<std::ranges::range_reference_t<R>, T>
  explicit Array(R&& values) {
    assign(detail::to_vector_of<T>(std::forward<R>(values)));
  }

  // In a named SharedMemory (see Value::create_at): `size` zero-initialised
  // elements at `offset`; attach_at() learns the size from the segment.
  [[nodiscard]] static Array create_at(const SharedMemory& shm, std::size_t offset, std::int64_t size) {
    Array a(detail::place_typed_block(shm, offset, size, sizeof(T), alignof(T), true, "Array"));
    for (std::size_t i = 0; i < a.size_; ++i) ::new (a.ptr_ + i) T();
    return a;
  }
  [[nodiscard]] static Array attach_at(const SharedMemory& shm, std::size_t offset) {
    return Array(detail::place_typed_block(shm, offset, 0, sizeof(T), alignof(T), false, "Array"));
  }
  [[nodiscard]] static constexpr std::size_t shared_size(std::size_t size) {
    return detail::kPlacedHeader + size * sizeof(T);
  }

  [[nodiscard]] std::size_t size() const { return size_; }
  // Locked, bounds-checked element access.
  [[nodiscard]] T get(std::size_t i) const {
    check(i);
    detail::AccessorGuard g(lock_);
    return ptr()[i];
  }
  void set(std::size_t i, const T& v) const {
    check(i);
    detail::AccessorGuard g(lock_);
    ptr()[i] = v;
  }
  // A locked snapshot (Python: arr[:]).
  [[nodiscard]] std::vector<T> to_vector() const {
    detail::AccessorGuard g(lock_);
    return {ptr(), ptr() + size_};
  }
  [[nodiscard]] RLock& get_lock() const { return lock_; }
  // The shared elements, unguarded: use under get_lock().
  [[nodiscard]] std::span<T> get_obj() const { return {ptr(), size_}; }

  // Only as a forkserver child's argument (see the top of this file).
  template <class Archive>
  void save(Archive& ar) const {
    ar(lock_, static_cast<std::uint64_t>(size_), detail::send_placement(keep_, ptr(), size_ * sizeof(T), "Array"));
  }
  template <class Archive>
  void load(Archive& ar) {
    std::uint64_t size = 0;
    detail::PassedPlacement p;
    ar(lock_, size, p);
    if (p.size != size * sizeof(T)) throw SyncError("Array: received size does not match its element type");
    detail::arrive(p, keep_, ptr_, "Array");
    size_ = static_cast<std::size_t>(size);
  }

 private:
  explicit Array(detail::TypedBlock block)
      : lock_(RLock::create_in_or_attach(std::move(block.lock_at))),
        keep_(std::move(block.keep)),
        ptr_(reinterpret_cast<T*>(block.data)),
        size_(block.count) {}
  void init(std::int64_t size) {
    auto block = detail::allocate_typed_block(size, sizeof(T), alignof(T), true, "Array");
    lock_ = RLock::create_in(std::move(block.lock_at));
    keep_ = std::move(block.keep);
    size_ = block.count;
    ptr_ = reinterpret_cast<T*>(block.data);
    for (std::size_t i = 0; i < size_; ++i) ::new (ptr_ + i) T();
  }
  void assign(const std::vector<T>& values) {
    init(static_cast<std::int64_t>(values.size()));
    std::copy(values.begin(), values.end(), ptr_);
  }
  void check(std::size_t i) const {
    if (i >= size_) detail::throw_index("Array", i, size_);
  }
  T* ptr() const {
    if (!ptr_) detail::throw_no_state("Array");
    return ptr_;
  }
  mutable RLock lock_;
  std::shared_ptr<void> keep_;
  T* ptr_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace mpx
