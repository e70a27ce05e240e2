#include "mpx/barrier.hpp"

#include <string>

#include "mpx/detail/futex.hpp"
#include "sync_state.hpp"

namespace mpx {

namespace detail {
// word: bit 31 broken | bits 16..30 generation | bits 0..15 arrived
struct alignas(64) BarrierState {
  explicit BarrierState(std::uint32_t p) : parties(p) {}
  StateHeader header{};
  std::atomic<std::uint32_t> word{0};
  std::atomic<std::uint32_t> reset_from{0xffffffffu};  // generation that reset() ended, if any
  std::uint32_t parties;
};
constexpr std::uint32_t kBarrierMagic = 0x4258504d;  // "MPXB"
constexpr std::uint32_t kBroken = 0x80000000u;
constexpr std::uint32_t kNoReset = 0xffffffffu;
inline std::uint32_t generation(std::uint32_t w) { return (w >> 16) & 0x7fff; }
inline std::uint32_t arrived(std::uint32_t w) { return w & 0xffff; }
inline std::uint32_t next_generation(std::uint32_t gen) { return ((gen + 1) & 0x7fff) << 16; }
}  // namespace detail

using namespace detail;

Barrier::Barrier(std::size_t parties, std::function<void()> action, std::optional<Timeout> timeout)
    : action_(std::move(action)), timeout_(timeout) {
  if (parties < 1 || parties > 0xffff)
    throw SyncError("Barrier: parties must be in [1, 65535], got " + std::to_string(parties));
  handle_ =
      SyncHandle<BarrierState>(construct_anonymous<BarrierState>(kBarrierMagic, static_cast<std::uint32_t>(parties)));
}

std::size_t Barrier::wait_until(const Deadline& deadline) {
  auto& s = handle_.state("Barrier");
  std::uint32_t w = s.word.load(std::memory_order_acquire);
  for (;;) {
    if (w & kBroken) throw BrokenBarrierError("Barrier: broken");
    if (arrived(w) >= s.parties) {
      // The last party of this round is releasing it: wait for the next round.
      if (futex_wait(s.word, w, deadline) == FutexWaitResult::timed_out) {
        abort();
        throw BrokenBarrierError("Barrier: wait timed out");
      }
      w = s.word.load(std::memory_order_acquire);
      continue;
    }
    if (s.word.compare_exchange_weak(w, w + 1, std::memory_order_acq_rel, std::memory_order_acquire)) break;
  }
  const std::uint32_t gen = generation(w);
  const std::uint32_t index = arrived(w);
  if (index + 1 == s.parties) {
    if (action_) {
      try {
        action_();
      } catch (...) {
        abort();
        throw;
      }
    }
    s.reset_from.store(kNoReset, std::memory_order_relaxed);
    s.word.store(next_generation(gen), std::memory_order_release);
    futex_wake_all(s.word);
    return index;
  }
  for (;;) {
    std::uint32_t cur = s.word.load(std::memory_order_acquire);
    if (generation(cur) != gen) {
      if (s.reset_from.load(std::memory_order_acquire) == gen) throw BrokenBarrierError("Barrier: reset while waiting");
      return index;
    }
    if (cur & kBroken) throw BrokenBarrierError("Barrier: broken while waiting");
    if (futex_wait(s.word, cur, deadline) == FutexWaitResult::timed_out) {
      cur = s.word.load(std::memory_order_acquire);
      if (generation(cur) != gen || (cur & kBroken)) continue;  // released or broken meanwhile: report that
      abort();
      throw BrokenBarrierError("Barrier: wait timed out");
    }
  }
}

void Barrier::abort() {
  auto& s = handle_.state("Barrier");
  s.word.fetch_or(kBroken, std::memory_order_acq_rel);
  futex_wake_all(s.word);
}

void Barrier::reset() {
  auto& s = handle_.state("Barrier");
  std::uint32_t w = s.word.load(std::memory_order_acquire);
  s.reset_from.store(generation(w), std::memory_order_release);
  s.word.store(next_generation(generation(w)), std::memory_order_release);
  futex_wake_all(s.word);
}

std::size_t Barrier::parties() const { return handle_.state("Barrier").parties; }
std::size_t Barrier::n_waiting() const {
  auto& s = handle_.state("Barrier");
  auto n = arrived(s.word.load(std::memory_order_acquire));
  return n >= s.parties ? 0 : n;
}
bool Barrier::broken() const { return handle_.state("Barrier").word.load(std::memory_order_acquire) & kBroken; }

detail::PassedPlacement Barrier::passed() const {
  if (action_) throw SyncError("Barrier: a barrier with an action cannot be passed to a forkserver child");
  return detail::pass(handle_, "Barrier");
}
void Barrier::arrive(const detail::PassedPlacement& p) {
  handle_ = SyncHandle<BarrierState>(detail::arrive<BarrierState>(p, kBarrierMagic, "Barrier"));
}

}  // namespace mpx
