// The shared-memory channel of a local manager client (not installed).
//
// One memfd mapping per client connection: a header and one buffer that
// holds either the request or the response (a client has one call in flight
// on its connection). The client writes a request and flips `state` to
// kRequest; the server's thread for that client copies it out (so the client
// cannot change it under the decoder), answers in the same buffer and flips
// `state` to kResponse. Waiting is a short spin, then FUTEX_WAIT in slices of
// kLivenessTick; between slices each side polls the Unix socket of the
// connection, which carries no data after the handshake and so becomes
// readable only when the peer process is gone.
#pragma once

#include <poll.h>
#include <sched.h>
#include <sys/socket.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <span>

#include "mpx/detail/deadline.hpp"
#include "mpx/detail/futex.hpp"
#include "mpx/detail/manager_protocol.hpp"
#include "mpx/detail/shared_mapping.hpp"

namespace mpx::detail::manager {

inline constexpr std::uint32_t kIdle = 0;
inline constexpr std::uint32_t kRequest = 1;
inline constexpr std::uint32_t kResponse = 2;
inline constexpr std::chrono::milliseconds kLivenessTick{50};

struct alignas(64) ChannelHeader {
  std::atomic<std::uint32_t> state{kIdle};
  std::atomic<std::uint32_t> server_sleeping{0};
  std::atomic<std::uint32_t> client_sleeping{0};
  std::atomic<std::uint64_t> length{0};
};
inline constexpr std::size_t kDataOffset = 64;
inline constexpr std::size_t kChannelBytes = kDataOffset + kMaxMessage;
static_assert(sizeof(ChannelHeader) <= kDataOffset);

// True when the peer of a connected stream socket is gone (EOF, reset), or
// when it sent data where none is expected (a local client after the handshake).
inline bool peer_gone(int fd) {
  pollfd p{fd, POLLIN | POLLRDHUP, 0};
  int r = ::poll(&p, 1, 0);
  if (r <= 0) return false;
  return (p.revents & (POLLHUP | POLLERR | POLLRDHUP | POLLIN)) != 0;
}

class Channel {
 public:
  Channel() = default;
  explicit Channel(SharedMapping mapping) : mapping_(std::move(mapping)) {}
  explicit operator bool() const { return static_cast<bool>(mapping_); }
  ChannelHeader& header() const { return *static_cast<ChannelHeader*>(mapping_.data()); }
  std::byte* data() const { return static_cast<std::byte*>(mapping_.data()) + kDataOffset; }

  // Writes `message` and publishes it as `state`, waking the peer if it sleeps.
  void publish(std::span<const std::byte> message, std::uint32_t state, std::atomic<std::uint32_t>& peer_sleeping) {
    std::memcpy(data(), message.data(), message.size());
    header().length.store(message.size(), std::memory_order_relaxed);
    header().state.store(state, std::memory_order_seq_cst);
    if (peer_sleeping.load(std::memory_order_seq_cst)) futex_wake_all(header().state);
  }

  enum class Wait { ready, timed_out, peer_gone };
  // Waits until `state` is `wanted`. `spin` bounds the busy phase.
  Wait wait_for(std::uint32_t wanted, std::atomic<std::uint32_t>& my_sleeping, int peer_fd, const Deadline& deadline,
                std::chrono::nanoseconds spin) {
    auto& st = header().state;
    // A short busy spin (the peer is usually running on the other core),
    // then yields until `spin` ran out: on a loaded machine the peer may need
    // this very core, and a busy spin would only delay it.
    for (int i = 0; i < 128; ++i) {
      if (st.load(std::memory_order_acquire) == wanted) return Wait::ready;
      __builtin_ia32_pause();
    }
    const auto spin_until = Deadline::Clock::now() + spin;
    while (Deadline::Clock::now() < spin_until) {
      if (st.load(std::memory_order_acquire) == wanted) return Wait::ready;
      ::sched_yield();
    }
    for (;;) {
      const std::uint32_t seen = st.load(std::memory_order_seq_cst);
      if (seen == wanted) return Wait::ready;
      if (deadline.expired()) return Wait::timed_out;
      // Checked before each sleep, not only after: a dead peer costs no tick.
      if (peer_gone(peer_fd)) return st.load(std::memory_order_acquire) == wanted ? Wait::ready : Wait::peer_gone;
      my_sleeping.store(1, std::memory_order_seq_cst);
      if (st.load(std::memory_order_seq_cst) != wanted) {
        auto left = deadline.remaining();
        futex_wait(st, seen, (left && *left < kLivenessTick) ? deadline : Deadline::after(kLivenessTick));
      }
      my_sleeping.store(0, std::memory_order_relaxed);
    }
  }

 private:
  SharedMapping mapping_;
};

}  // namespace mpx::detail::manager
