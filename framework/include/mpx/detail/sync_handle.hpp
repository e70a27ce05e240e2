// mpx/detail/sync_handle.hpp: where a synchronisation primitive's futex words
// live, and the cheap reference every primitive handle is.
//
// A primitive's state is a small struct in MAP_SHARED memory: either its own
// mapping of a fresh memfd (inherited by fork: the Python way) or a slot in a named
// SharedMemory (so unrelated processes can attach). A handle holds a
// shared_ptr keeping that memory mapped, so memory cannot be unmapped under a
// live handle; only a moved-from handle has no state, and using it throws
// SyncError. Copies refer to the same state. Every mapping keeps its file
// descriptor, so a primitive can be passed to a forkserver child
// (fd_passing.hpp); PassedToChild gives each primitive the save/load that
// does it.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <tuple>
#include <utility>

#include "mpx/sync_error.hpp"

namespace mpx {
class SharedMemory;
}

namespace mpx::detail {

struct Placement {
  std::shared_ptr<void> keep;  // keeps the memory mapped: always a SharedMapping (fd_passing.hpp relies on it)
  void* at = nullptr;          // the state, zero-filled for a fresh anonymous block
};

// A fresh shared block of `size` bytes (rounded to a page), zero-filled, in
// its own memfd (SharedMapping::anonymous).
[[nodiscard]] Placement allocate_shared_block(std::size_t size);
// `size` bytes at `offset` of an open SharedMemory, checked for bounds and
// alignment; throws SyncError naming `what` otherwise.
[[nodiscard]] Placement place_in(const SharedMemory& shm, std::size_t offset, std::size_t size, std::size_t align,
                                 const char* what);

[[noreturn]] void throw_no_state(const char* what);

// Every primitive's state starts with this word, set last by the creator,
// checked by attach_at().
struct StateHeader {
  std::uint32_t magic;
};

template <class State>
class SyncHandle {
 public:
  SyncHandle() = default;
  explicit SyncHandle(Placement p) : keep_(std::move(p.keep)), state_(static_cast<State*>(p.at)) {}
  SyncHandle(const SyncHandle&) = default;
  SyncHandle& operator=(const SyncHandle&) = default;
  SyncHandle(SyncHandle&& other) noexcept
      : keep_(std::move(other.keep_)), state_(std::exchange(other.state_, nullptr)) {}
  SyncHandle& operator=(SyncHandle&& other) noexcept {
    keep_ = std::move(other.keep_);
    state_ = std::exchange(other.state_, nullptr);
    return *this;
  }
  ~SyncHandle() = default;

  [[nodiscard]] State& state(const char* what) const {
    if (!state_) throw_no_state(what);
    return *state_;
  }
  [[nodiscard]] bool has_state() const noexcept { return state_ != nullptr; }
  [[nodiscard]] const std::shared_ptr<void>& keep() const noexcept { return keep_; }
  [[nodiscard]] bool same_state(const SyncHandle& other) const noexcept { return state_ == other.state_; }

 private:
  std::shared_ptr<void> keep_;
  State* state_ = nullptr;
};

// Where a placement is, as it travels: its mapping's descriptor index and
// its offset in that mapping.
struct PassedPlacement {
  std::uint32_t fd_index = 0;
  std::uint64_t offset = 0;
  std::uint64_t size = 0;  // bytes the primitive needs there, checked on arrival

  template <class Archive>
  void serialize(Archive& ar) {
    ar(fd_index, offset, size);
  }
};

// The save/load of a primitive handle, written once (CRTP): only to pass it
// as an argument of a process started with forkserver, where its shared
// memory travels as a descriptor (fd_passing.hpp); elsewhere (inside a
// message) passed() throws SyncError. On the wire: the handle's own fields
// that travel, then the PassedPlacement of its state.
// Derived befriends this base and provides
//   PassedPlacement passed() const;        // send_placement of its state
//   void arrive(const PassedPlacement&);   // takes the received state
// and, to send fields of its own, hides travelling() with
//   template <class Self> static auto travelling(Self& self) { return std::tie(self.field...); }
// and, to reset fields that do not travel, reset_after_arrival().
template <class Derived>
class PassedToChild {
 public:
  template <class Archive>
  void save(Archive& ar) const {
    const auto& self = static_cast<const Derived&>(*this);
    std::apply([&](const auto&... fields) { ar(fields..., self.passed()); }, Derived::travelling(self));
  }
  template <class Archive>
  void load(Archive& ar) {
    auto& self = static_cast<Derived&>(*this);
    PassedPlacement p;
    std::apply([&](auto&... fields) { ar(fields..., p); }, Derived::travelling(self));
    self.arrive(p);
    self.reset_after_arrival();
  }

 protected:
  // Only as a base; the handle lives in Derived.
  PassedToChild() = default;
  PassedToChild(const PassedToChild&) = default;
  PassedToChild& operator=(const PassedToChild&) = default;
  PassedToChild(PassedToChild&&) noexcept = default;
  PassedToChild& operator=(PassedToChild&&) noexcept = default;
  ~PassedToChild() = default;

  // By default nothing but the state travels, and nothing is reset.
  static std::tuple<> travelling(const Derived&) { return {}; }
  void reset_after_arrival() {}
};

}  // namespace mpx::detail
