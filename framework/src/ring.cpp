// The shared-memory MPMC message ring (see mpx/detail/ring.hpp for the contract).
//
// Layout of the mapping:
//   RingHeader                 tail, head, wake-up words, JoinableQueue count
//   RingCell[capacity]         one 64-byte cache line per message in flight
//   RingLane[lanes]            control block of each lane (small lanes first)
//   lane data[lanes]           small lanes packed, then lane_bytes each, page aligned
// All of it is zero at creation, which is a valid empty ring: creation
// touches only the header page, and the rest is charged and made resident as
// it is used (SharedMapping::reserved).
//
// Cells follow Vyukov's bounded MPMC queue, with the claim made on the cell
// itself so that it carries the claimer's pid. A cell's state word is
//   turn (32 bits) | phase (2 bits) | pid or aux (30 bits)
// where turn = position / capacity (the lap). For position p of lap t:
//   FREE(t)        the producer of p may claim it (CAS -> WRITING(t, pid))
//   WRITING(t,pid) being filled; FULL(t) publishes it (one release store)
//   FULL(t,aux)    ready; aux = kAbandoned marks a skipped half-written cell
//   READING(t,pid) claimed by a consumer; released as FREE(t+1)
// tail and head are advanced by whoever sees the cell at them claimed
// (helping), so a process killed between claiming a cell and moving the index
// never stalls the others. An index only moves past p after the cell at p was
// claimed for that lap.
//
// Laps: a position is lap << shift | index (shift = bits of capacity-1), so a
// lap may end before the last cell. A producer that finds the ring empty at
// an index >= kJumpAt (a multiple of 64: once per page of cells) claims that
// cell as a *jump* (READING with kJumpBit) and moves head, then tail, to the
// start of the next lap; helpers that see a jump cell do the same. A shallow
// queue thus keeps reusing its first kJumpAt cells instead of walking (and
// making resident) all `capacity` of them. Cells past the jump keep the turn
// of the last lap that used them: a FREE cell of an older lap is as free as
// one of this lap, and a cell whose turn looks *newer* than the index's lap
// while the index still points at it can only be one skipped for 2^31 laps
// (turns are 32 bits): it is read as older. A newer turn with a moved index
// is the usual "someone else got here first".
//
// Wake-ups: a side that found nothing spins briefly, then sets its
// "sleeping" flag, re-checks, and futex-waits on a sequence word. The other
// side, after publishing (seq_cst store), loads the flag (seq_cst) and only
// then pays for a syscall. A waiter killed while asleep leaves the flag set:
// the next notifier clears it and wakes nobody, once.
//
// Lanes: a lane's claim word is (generation << 32) | owner pid (0 = free);
// its pos word is the linked cell's position + 1 (0 = not linked). Producers
// take the lowest free small lane at or above a shared hint that every free
// lowers, so the lanes in use stay the lowest ones. A
// message that fits a lane is copied in before its cell is published, so it
// is complete the moment a consumer can see it. A longer one is streamed:
// cell first, then chunks; the consumer copies them out as they arrive.
#include "mpx/detail/ring.hpp"

#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>
#include <string>

#include "mpx/detail/futex.hpp"
#include "mpx/detail/identity.hpp"
#include "mpx/queue.hpp"  // QueueError

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MPX_CPU_RELAX() _mm_pause()
#else
#define MPX_CPU_RELAX() std::atomic_signal_fence(std::memory_order_seq_cst)
#endif

namespace mpx::detail {

namespace {

constexpr std::uint64_t kMagic = 0x6d70782d72696e67ULL;  // "mpx-ring"
constexpr std::uint64_t kNoPos = 0;  // a lane's pos word when no cell links it
constexpr std::uint32_t kAbandoned = 1;
constexpr std::uint32_t kKindInline = 0;
constexpr std::uint32_t kKindLane = 1;
// How long a waiter watches the same claimed state before it checks whether
// the claimer still lives; also the longest single futex sleep.
constexpr auto kLivenessTick = std::chrono::milliseconds(20);
constexpr int kSpinPause = 32;    // busy spins (4 pauses each) before yielding
constexpr int kSpinYield = 100;   // sched_yield rounds before sleeping: lets a peer on our core run
constexpr std::size_t kStreamChunk = 256 * 1024;
// A producer that finds the ring empty at a cell index >= kJumpAt starts the
// next lap (see "Laps"): 1024 cells are 64 KiB.
constexpr std::uint64_t kJumpAt = 1024;
constexpr std::uint64_t kCellsPerPage = 64;
// In the low bits of a READING state: the cell is a jump, not a message
// (pids are below 2^22, kAbandoned is 1).
constexpr std::uint32_t kJumpBit = 1u << 29;

enum Phase : std::uint32_t { kFree = 0, kWriting = 1, kFull = 2, kReading = 3 };

constexpr std::uint64_t make_state(std::uint32_t turn, Phase phase, std::uint32_t low) {
  return (std::uint64_t{turn} << 32) | (std::uint64_t{phase} << 30) | (low & 0x3fffffffu);
}
constexpr std::uint32_t turn_of_state(std::uint64_t w) { return static_cast<std::uint32_t>(w >> 32); }
constexpr Phase phase_of(std::uint64_t w) { return static_cast<Phase>((w >> 30) & 3u); }
constexpr std::uint32_t low_of(std::uint64_t w) { return static_cast<std::uint32_t>(w & 0x3fffffffu); }
// The pid of the process holding a WRITING or READING cell.
constexpr pid_t holder_of(std::uint64_t w) { return static_cast<pid_t>(low_of(w) & ~kJumpBit); }
// Signed lap distance of state w from lap t (wraps correctly at 2^32).
constexpr std::int32_t lap_diff(std::uint64_t w, std::uint32_t t) {
  return static_cast<std::int32_t>(turn_of_state(w) - t);
}

constexpr std::uint32_t claim_pid(std::uint64_t claim) { return static_cast<std::uint32_t>(claim); }
constexpr std::uint32_t claim_gen(std::uint64_t claim) { return static_cast<std::uint32_t>(claim >> 32); }

std::size_t round_up(std::size_t n, std::size_t to) { return (n + to - 1) / to * to; }

struct LaneRef {
  std::uint32_t index;
  std::uint32_t unused;
  std::uint64_t claim;
  std::uint64_t size;
};
static_assert(sizeof(LaneRef) <= Ring::kInlineBytes);

// Tracks how long a waiter has seen the same state word, to decide when to
// pay for a liveness check of the process named in it.
class StuckWatch {
 public:
  // True once `w` has been observed unchanged for kLivenessTick (and then
  // again every tick).
  bool stuck(std::uint64_t w) {
    auto now = Deadline::Clock::now();
    if (w != word_ || !valid_) {
      word_ = w;
      valid_ = true;
      since_ = now;
      return false;
    }
    if (now - since_ >= kLivenessTick) {
      since_ = now;
      return true;
    }
    return false;
  }

 private:
  std::uint64_t word_ = 0;
  bool valid_ = false;
  Deadline::Clock::time_point since_{};
};

// One round of waiting: spin a little, then sleep on `seq` until notified,
// the deadline, or one liveness tick. `ready` re-checks the condition.
class Waiter {
 public:
  template <class Ready>
  void wait(Ready&& ready, std::atomic<std::uint32_t>& seq, std::atomic<std::uint32_t>& sleeping,
            const Deadline& deadline) {
    if (spins_ < kSpinPause) {
      ++spins_;
      for (int i = 0; i < 4; ++i) MPX_CPU_RELAX();
      return;
    }
    if (spins_ < kSpinPause + kSpinYield) {
      ++spins_;
      ::sched_yield();
      return;
    }
    std::uint32_t s = seq.load(std::memory_order_seq_cst);
    sleeping.store(1, std::memory_order_seq_cst);
    if (ready()) return;
    auto tick = Deadline::after(kLivenessTick);
    auto left = deadline.remaining();
    const Deadline& until = (left && *left < kLivenessTick) ? deadline : tick;
    futex_wait(seq, s, until);
  }
  void reset() { spins_ = 0; }
  [[nodiscard]] bool spun_out() const { return spins_ >= kSpinPause; }

 private:
  int spins_ = 0;
};

// Consults a put's StopCheck once the waiter has spun out, then at most once
// per liveness tick (the check may be a system call).
class StopPoll {
 public:
  explicit StopPoll(const StopCheck* stop) : stop_(stop) {}
  bool operator()(const Waiter& waiter) {
    if (!stop_ || !waiter.spun_out()) return false;
    auto now = Deadline::Clock::now();
    if (now < next_) return false;
    next_ = now + kLivenessTick;
    return (*stop_)();
  }

 private:
  const StopCheck* stop_;
  Deadline::Clock::time_point next_{};
};

void notify(std::atomic<std::uint32_t>& seq, std::atomic<std::uint32_t>& sleeping) {
  // The caller published with a seq_cst store; this seq_cst load pairs with
  // the waiter's seq_cst store of the flag (Dekker): one of the two sees the other.
  if (sleeping.load(std::memory_order_seq_cst) != 0 && sleeping.exchange(0, std::memory_order_seq_cst) != 0) {
    seq.fetch_add(1, std::memory_order_seq_cst);
    futex_wake_all(seq);
  }
}

// Moves a ring index from pos to next unless someone already did.
inline void advance(std::atomic<std::uint64_t>& index, std::uint64_t pos, std::uint64_t next) {
  index.compare_exchange_strong(pos, next, std::memory_order_acq_rel);
}

// A lane claim whose pid carries this bit is being freed by that pid.
constexpr std::uint32_t kFreeingBit = 0x80000000u;


}  // namespace

struct alignas(64) RingHeader {
  std::uint64_t magic;
  std::uint64_t capacity;
  alignas(64) std::atomic<std::uint64_t> tail;
  alignas(64) std::atomic<std::uint64_t> head;
  alignas(64) std::atomic<std::uint32_t> not_empty_seq;
  std::atomic<std::uint32_t> consumers_sleeping;
  alignas(64) std::atomic<std::uint32_t> not_full_seq;
  std::atomic<std::uint32_t> producers_sleeping;
  alignas(64) std::atomic<std::uint32_t> lane_free_seq;
  std::atomic<std::uint32_t> lane_waiters;
  std::atomic<std::uint32_t> lane_hint;
  alignas(64) std::atomic<std::uint64_t> unfinished;
  std::atomic<std::uint32_t> unfinished_seq;
  std::atomic<std::uint32_t> join_waiters;
};

struct alignas(64) RingCell {
  std::atomic<std::uint64_t> state;
  std::uint32_t len;
  std::uint32_t kind;
  std::byte data[Ring::kInlineBytes];
};
static_assert(sizeof(RingCell) == 64);

struct alignas(64) RingLane {
  std::atomic<std::uint64_t> claim;
  std::atomic<std::uint64_t> pos;
  std::atomic<std::uint64_t> size;
  std::atomic<std::uint32_t> aborted;
  alignas(64) std::atomic<std::uint64_t> written;
  alignas(64) std::atomic<std::uint64_t> read;
  alignas(64) std::atomic<std::uint32_t> seq;
  std::atomic<std::uint32_t> sleeping;
};

bool process_alive(pid_t pid) noexcept {
  if (pid <= 0) return false;
  if (pid == current_pid()) return true;
  return !owner_gone(pid, 0);  // a zombie (killed, not yet reaped) counts as dead
}

Ring Ring::create(const RingOptions& options) {
  // Only Queue passes user-chosen options; its error names them.
  auto bad = [](const char* rule) { throw QueueError(std::string("mpx queue: QueueOptions: ") + rule); };
  if (options.capacity == 0 || options.capacity > (std::size_t{1} << 26)) bad("capacity must be in [1, 2^26]");
  if (options.lanes == 0 || options.lanes > 4096) bad("lanes must be in [1, 4096]");
  if (options.small_lanes > 65536) bad("small_lanes must be at most 65536");
  if (options.lane_bytes < 4096) bad("lane_bytes must be >= 4096");
  if (options.small_lanes && (options.small_lane_bytes <= kInlineBytes || options.small_lane_bytes > options.lane_bytes))
    bad("small_lane_bytes must be in (48, lane_bytes]");
  Ring r;
  r.capacity_ = options.capacity;
  while ((std::size_t{1} << r.shift_) < r.capacity_) ++r.shift_;
  r.mask_ = (std::uint64_t{1} << r.shift_) - 1;
  r.small_count_ = options.small_lanes;
  r.small_bytes_ = options.small_lanes ? options.small_lane_bytes : 0;
  r.small_stride_ = round_up(r.small_bytes_, 64);
  r.lane_count_ = options.small_lanes + options.lanes;
  r.lane_bytes_ = options.lane_bytes;
  r.lane_stride_ = round_up(options.lane_bytes, 4096);
  std::size_t cells_off = round_up(sizeof(RingHeader), 64);
  std::size_t lanes_off = cells_off + r.capacity_ * sizeof(RingCell);
  std::size_t data_off = round_up(lanes_off + r.lane_count_ * sizeof(RingLane), 4096);
  std::size_t total = data_off + round_up(r.small_count_ * r.small_stride_, 4096) + options.lanes * r.lane_stride_;
  r.mapping_ = SharedMapping::reserved(total, "a message ring (Queue or Pipe)");
  auto* base = static_cast<std::byte*>(r.mapping_.data());
  // Zero-filled memory is a valid initial state: every cell FREE(0), every
  // lane free with generation 0 and unlinked. Only the constants need
  // writing; nothing past the header page is touched.
  r.header_ = new (base) RingHeader{};
  r.header_->magic = kMagic;
  r.header_->capacity = r.capacity_;
  r.cells_ = reinterpret_cast<RingCell*>(base + cells_off);
  r.lanes_ = base + lanes_off;
  r.lane_data_ = base + data_off;
  return r;
}

RingCell& Ring::cell_at(std::uint64_t pos) const { return cells_[pos & mask_]; }
std::uint32_t Ring::turn_of(std::uint64_t pos) const { return static_cast<std::uint32_t>(pos >> shift_); }
std::uint64_t Ring::next_pos(std::uint64_t pos, std::uint64_t w) const {
  const bool jump = phase_of(w) == kReading && (low_of(w) & kJumpBit) != 0;
  if (jump || (pos & mask_) + 1 == capacity_) return ((pos >> shift_) + 1) << shift_;
  return pos + 1;
}
RingLane& Ring::lane(std::size_t i) const { return reinterpret_cast<RingLane*>(lanes_)[i]; }
std::byte* Ring::lane_data(std::size_t i) const {
  if (i < small_count_) return lane_data_ + i * small_stride_;
  return lane_data_ + round_up(small_count_ * small_stride_, 4096) + (i - small_count_) * lane_stride_;
}

void Ring::notify_consumers() { notify(header_->not_empty_seq, header_->consumers_sleeping); }
void Ring::notify_producers() { notify(header_->not_full_seq, header_->producers_sleeping); }
void Ring::notify_lane(RingLane& l) { notify(l.seq, l.sleeping); }
void Ring::notify_lane_free() { notify(header_->lane_free_seq, header_->lane_waiters); }

void Ring::release_cell(RingCell& cell, std::uint64_t pos) {
  cell.state.store(make_state(turn_of(pos) + 1, kFree, 0), std::memory_order_seq_cst);
  notify_producers();
}

template <class Fill>
bool Ring::put_cell(Fill&& fill, const Deadline& deadline, bool block, const StopCheck* stop) {
  RingHeader& h = *header_;
  const auto me = static_cast<std::uint32_t>(current_pid());
  Waiter waiter;
  StuckWatch watch;
  StopPoll stopped(stop);
  for (;;) {
    std::uint64_t pos = h.tail.load(std::memory_order_acquire);
    RingCell& c = cell_at(pos);
    const std::uint32_t t = turn_of(pos);
    std::uint64_t w = c.state.load(std::memory_order_acquire);
    std::int32_t diff = lap_diff(w, t);
    if (diff > 0) {
      if (h.tail.load(std::memory_order_acquire) != pos) continue;  // a stale tail: re-read
      diff = -1;  // a cell skipped for 2^31 laps (see "Laps"): older
    }
    if (diff <= 0 && phase_of(w) == kFree) {
      const std::uint64_t idx = pos & mask_;
      if (idx >= kJumpAt && idx % kCellsPerPage == 0 && h.head.load(std::memory_order_acquire) == pos) {
        // Empty this far into the lap: start the next one (see "Laps").
        const std::uint64_t jump = make_state(t, kReading, me | kJumpBit);
        if (c.state.compare_exchange_strong(w, jump, std::memory_order_acq_rel)) {
          if (test_hook_after_claim_jump) test_hook_after_claim_jump();
          const std::uint64_t next = next_pos(pos, jump);
          advance(h.head, pos, next);  // head first: size() never sees tail a lap ahead
          advance(h.tail, pos, next);
          release_cell(c, pos);
        }
        continue;
      }
      if (c.state.compare_exchange_strong(w, make_state(t, kWriting, me), std::memory_order_acq_rel)) {
        advance(h.tail, pos, next_pos(pos, 0));
        if (test_hook_after_claim_put) test_hook_after_claim_put();
        fill(c, pos);
        c.state.store(make_state(t, kFull, 0), std::memory_order_seq_cst);
        notify_consumers();
        return true;
      }
      continue;
    }
    if (diff == 0) {
      // Someone claimed this position (maybe and died before moving tail): help.
      const std::uint64_t next = next_pos(pos, w);
      if (phase_of(w) == kReading && (low_of(w) & kJumpBit)) advance(h.head, pos, next);  // head first, as its maker
      advance(h.tail, pos, next);
      continue;
    }
    {
      // An older lap's message still occupies the cell: the ring is full.
      if (!block || deadline.expired() || stopped(waiter)) return false;
      if (phase_of(w) == kReading && watch.stuck(w) && !process_alive(holder_of(w))) {
        // Its consumer died while holding it: that one message is lost.
        // A consumer still at the old position sees a later lap and moves on.
        if (c.state.compare_exchange_strong(w, make_state(t, kFree, 0), std::memory_order_acq_rel))
          notify_producers();
        continue;
      }
      waiter.wait(
          [&] {
            return c.state.load(std::memory_order_seq_cst) != w || h.tail.load(std::memory_order_relaxed) != pos;
          },
          h.not_full_seq, h.producers_sleeping, deadline);
    }
  }
}

bool Ring::put(std::span<const std::byte> message, const Deadline& deadline, bool block, const StopCheck* stop) {
  if (message.size() > kInlineBytes) return put_large(message, deadline, block, stop);
  return put_cell(
      [&](RingCell& c, std::uint64_t) {
        c.kind = kKindInline;
        c.len = static_cast<std::uint32_t>(message.size());
        if (!message.empty()) std::memcpy(c.data, message.data(), message.size());
      },
      deadline, block, stop);
}

bool Ring::get(ByteSink sink, const Deadline& deadline, bool block) {
  RingHeader& h = *header_;
  const auto me = static_cast<std::uint32_t>(current_pid());
  Waiter waiter;
  StuckWatch watch;
  for (;;) {
    std::uint64_t pos = h.head.load(std::memory_order_acquire);
    RingCell& c = cell_at(pos);
    const std::uint32_t t = turn_of(pos);
    std::uint64_t w = c.state.load(std::memory_order_acquire);
    std::int32_t diff = lap_diff(w, t);
    if (diff > 0) {
      // Consumed by another consumer, who moved head before releasing it.
      if (h.head.load(std::memory_order_acquire) != pos) continue;
      diff = -1;  // head still here: a cell skipped for 2^31 laps (see "Laps"), older
    }
    if (diff == 0 && phase_of(w) == kReading) {
      // Claimed by another consumer (or a jump): help head along.
      advance(h.head, pos, next_pos(pos, w));
      continue;
    }
    if (diff == 0 && phase_of(w) == kFull) {
      if (!c.state.compare_exchange_strong(w, make_state(t, kReading, me), std::memory_order_acq_rel)) continue;
      advance(h.head, pos, next_pos(pos, 0));
      if (low_of(w) == kAbandoned) {
        release_cell(c, pos);
        continue;
      }
      if (test_hook_after_claim_get) test_hook_after_claim_get();
      struct Release {
        Ring* ring;
        RingCell& cell;
        std::uint64_t pos;
        ~Release() { ring->release_cell(cell, pos); }
      } release{this, c, pos};
      if (c.kind == kKindInline) {
        sink(std::span<const std::byte>(c.data, c.len));
        return true;
      }
      if (read_lane(c, pos, sink)) return true;
      continue;  // the large message was abandoned by its producer: next one
    }
    if (diff == 0 && phase_of(w) == kWriting) {
      // A producer is filling the next message. If it died there, skip it.
      // Checked after a liveness tick of waiting, and also right before
      // giving up: a get_nowait (or an expiring get) must not report Empty
      // while items wait behind a cell whose writer is dead.
      const bool stuck = watch.stuck(w);
      const bool giving_up = (!block && waiter.spun_out()) || (block && deadline.expired());
      if ((stuck || giving_up) && !process_alive(holder_of(w))) {
        if (c.state.compare_exchange_strong(w, make_state(t, kFull, kAbandoned), std::memory_order_acq_rel))
          notify_consumers();
        continue;
      }
      if (giving_up) return false;
    } else {
      // FREE(t) or FREE of an older lap: nothing put yet; an older lap still
      // being read: nothing can be put here yet either. Empty.
      if (!block || deadline.expired()) return false;
    }
    waiter.wait(
        [&] { return c.state.load(std::memory_order_seq_cst) != w || h.head.load(std::memory_order_relaxed) != pos; },
        h.not_empty_seq, h.consumers_sleeping, deadline);
  }
}

int Ring::acquire_lane(std::size_t bytes, const Deadline& deadline, bool block, const StopCheck* stop) {
  RingHeader& h = *header_;
  const auto me = static_cast<std::uint32_t>(current_pid());
  Waiter waiter;
  StopPoll stopped(stop);
  bool check_orphans = false;
  StuckWatch watch;  // lanes busy for a liveness tick: look for dead holders
  // A medium message tries the small lanes first, from the shared hint (the
  // lowest small lane that may be free: frees lower it, claims raise it past
  // the lane taken), so the lanes in use stay the lowest ones and a long
  // backlog is not rescanned on every put; then the large ones.
  const bool medium = bytes <= small_bytes_;
  const std::size_t first = medium ? 0 : small_count_;
  auto try_claim = [&](std::size_t idx) {
    RingLane& l = lane(idx);
    std::uint64_t claim = l.claim.load(std::memory_order_acquire);
    if (claim_pid(claim) == 0) {
      std::uint64_t mine = (std::uint64_t{claim_gen(claim) + 1} << 32) | me;
      return l.claim.compare_exchange_strong(claim, mine, std::memory_order_acq_rel);
    }
    if (check_orphans && lane_orphaned(l, claim)) free_lane(l, claim);
    return false;
  };
  for (;;) {
    if (medium) {
      std::uint32_t hint = h.lane_hint.load(std::memory_order_acquire);
      const std::size_t start = hint < small_count_ ? hint : 0;
      for (std::size_t k = 0; k < small_count_; ++k) {
        std::size_t idx = start + k < small_count_ ? start + k : start + k - small_count_;
        if (try_claim(idx)) {
          // Unless a free lowered the hint meanwhile.
          h.lane_hint.compare_exchange_strong(hint, static_cast<std::uint32_t>(idx + 1), std::memory_order_acq_rel);
          return static_cast<int>(idx);
        }
      }
    }
    // Lowest free large lane first: the lanes in use stay few and warm in cache.
    for (std::size_t idx = small_count_; idx < lane_count_; ++idx)
      if (try_claim(idx)) return static_cast<int>(idx);
    if (check_orphans && !medium)
      for (std::size_t idx = 0; idx < small_count_; ++idx) (void)try_claim(idx);  // recover small ones too
    if (!block || deadline.expired() || stopped(waiter)) return -1;
    // Every lane is busy: sleep until one is freed; after each sleep look for
    // lanes whose holders died.
    check_orphans = watch.stuck(0);
    waiter.wait(
        [&] {
          for (std::size_t i = first; i < lane_count_; ++i)
            if (claim_pid(lane(i).claim.load(std::memory_order_seq_cst)) == 0) return true;
          return false;
        },
        h.lane_free_seq, h.lane_waiters, deadline);
  }
}

bool Ring::lane_orphaned(RingLane& l, std::uint64_t claim) {
  const std::uint64_t linked = l.pos.load(std::memory_order_acquire);
  if (l.claim.load(std::memory_order_acquire) != claim) return false;
  if (claim_pid(claim) & kFreeingBit) return !process_alive(static_cast<pid_t>(claim_pid(claim) & ~kFreeingBit));
  if (linked == kNoPos) return !process_alive(static_cast<pid_t>(claim_pid(claim)));  // never linked to a cell
  const std::uint64_t pos = linked - 1;
  RingCell& c = cell_at(pos);
  std::uint64_t w = c.state.load(std::memory_order_acquire);
  std::int32_t diff = lap_diff(w, turn_of(pos));
  if (diff > 0) return true;  // its cell was consumed or recycled
  if (diff < 0) return false;
  switch (phase_of(w)) {
    case kFull: return low_of(w) == kAbandoned;  // skipped cells never free their lane
    case kWriting:
    case kReading: return !process_alive(holder_of(w));
    case kFree: return false;
  }
  return false;
}

void Ring::free_lane(RingLane& l, std::uint64_t claim) {
  // Two steps so that only one of several concurrent freers resets pos, and
  // a new claimer always finds the lane unlinked: claim -> "being freed by
  // me" -> free.
  const std::uint64_t gen = std::uint64_t{claim_gen(claim)} << 32;
  const std::uint64_t freeing = gen | (static_cast<std::uint32_t>(current_pid()) | kFreeingBit);
  if (!l.claim.compare_exchange_strong(claim, freeing, std::memory_order_acq_rel)) return;
  l.pos.store(kNoPos, std::memory_order_release);
  l.claim.store(gen, std::memory_order_seq_cst);
  lower_lane_hint(static_cast<std::size_t>(&l - reinterpret_cast<RingLane*>(lanes_)));
  notify_lane_free();
}

void Ring::lower_lane_hint(std::size_t idx) {
  if (idx >= small_count_) return;
  auto& hint = header_->lane_hint;
  std::uint32_t cur = hint.load(std::memory_order_relaxed);
  while (idx < cur && !hint.compare_exchange_weak(cur, static_cast<std::uint32_t>(idx), std::memory_order_acq_rel)) {
  }
}

bool Ring::put_large(std::span<const std::byte> message, const Deadline& deadline, bool block,
                     const StopCheck* stop) {
  int idx = acquire_lane(message.size(), deadline, block, stop);
  if (idx < 0) return false;
  RingLane& l = lane(static_cast<std::size_t>(idx));
  const std::uint64_t claim = l.claim.load(std::memory_order_acquire);
  std::byte* data = lane_data(static_cast<std::size_t>(idx));
  const std::uint64_t n = message.size();
  const std::uint64_t lane_bytes = lane_size(static_cast<std::size_t>(idx));
  const bool fits = n <= lane_bytes;
  l.size.store(n, std::memory_order_relaxed);
  l.aborted.store(0, std::memory_order_relaxed);
  l.read.store(0, std::memory_order_relaxed);
  if (fits) {
    std::memcpy(data, message.data(), n);
    l.written.store(n, std::memory_order_release);
  } else {
    l.written.store(0, std::memory_order_release);
  }
  std::uint64_t pos = 0;  // the linked cell's position
  bool linked = put_cell(
      [&](RingCell& c, std::uint64_t at) {
        pos = at;
        l.pos.store(at + 1, std::memory_order_release);
        c.kind = kKindLane;
        c.len = 0;
        LaneRef ref{static_cast<std::uint32_t>(idx), 0, claim, n};
        std::memcpy(c.data, &ref, sizeof ref);
      },
      deadline, block, stop);
  if (!linked) {
    free_lane(l, claim);
    return false;
  }
  if (fits) return true;

  // Stream: the consumer copies chunks out while we copy them in.
  RingCell& c = cell_at(pos);
  const std::uint32_t t = turn_of(pos);
  std::uint64_t w = 0;
  Waiter waiter;
  StuckWatch watch;
  StopPoll stopped(stop);
  while (w < n) {
    std::uint64_t r = l.read.load(std::memory_order_acquire);
    std::uint64_t space = lane_bytes - (w - r);
    if (space > 0) {
      std::uint64_t chunk = std::min<std::uint64_t>({space, n - w, kStreamChunk});
      std::uint64_t off = w % lane_bytes;
      std::uint64_t first = std::min<std::uint64_t>(chunk, lane_bytes - off);
      std::memcpy(data + off, message.data() + w, first);
      if (chunk > first) std::memcpy(data, message.data() + w + first, chunk - first);
      w += chunk;
      l.written.store(w, std::memory_order_seq_cst);
      notify_lane(l);
      waiter.reset();
      if (test_hook_mid_stream_put && w < n) test_hook_mid_stream_put();
      continue;
    }
    // Lane full: wait for the consumer. If it died holding the message, the
    // message is lost with it; the lane is ours to free.
    std::uint64_t cw = c.state.load(std::memory_order_acquire);
    if (lap_diff(cw, t) == 0 && phase_of(cw) == kReading && watch.stuck(cw) &&
        !process_alive(holder_of(cw))) {
      free_lane(l, claim);
      return true;
    }
    if (lap_diff(cw, t) != 0) {  // the cell was recovered (its consumer died): drop the rest
      free_lane(l, claim);
      return true;
    }
    if ((block && deadline.expired()) || stopped(waiter)) {
      // Give up: the consumer (if any) drops the partial message.
      l.aborted.store(1, std::memory_order_seq_cst);
      notify_lane(l);
      return false;
    }
    waiter.wait([&] { return l.read.load(std::memory_order_seq_cst) != r; }, l.seq, l.sleeping,
                block ? deadline : Deadline::never());
  }
  return true;
}

bool Ring::read_lane(RingCell& cell, std::uint64_t /*pos*/, ByteSink sink) {
  LaneRef ref;
  std::memcpy(&ref, cell.data, sizeof ref);
  if (ref.index >= lane_count_) return false;
  RingLane& l = lane(ref.index);
  if (l.claim.load(std::memory_order_acquire) != ref.claim) return false;  // recovered meanwhile: lost
  struct Free {
    Ring* ring;
    RingLane& lane;
    std::uint64_t claim;
    ~Free() { ring->free_lane(lane, claim); }
  } free_on_exit{this, l, ref.claim};
  std::byte* data = lane_data(ref.index);
  const std::uint64_t n = ref.size;
  const std::uint64_t lane_bytes = lane_size(ref.index);
  if (n <= lane_bytes) {
    // Written completely before the cell was published.
    sink(std::span<const std::byte>(data, n));
    return true;
  }
  thread_local std::unique_ptr<std::byte[]> buffer;
  thread_local std::size_t buffer_size = 0;
  if (buffer_size < n) {
    buffer.reset(new std::byte[n]);
    buffer_size = n;
  }
  std::uint64_t r = 0;
  Waiter waiter;
  StuckWatch watch;
  const auto owner = static_cast<pid_t>(claim_pid(ref.claim));
  while (r < n) {
    std::uint64_t w = l.written.load(std::memory_order_acquire);
    if (w > r) {
      std::uint64_t chunk = w - r;
      std::uint64_t off = r % lane_bytes;
      std::uint64_t first = std::min<std::uint64_t>(chunk, lane_bytes - off);
      std::memcpy(buffer.get() + r, data + off, first);
      if (chunk > first) std::memcpy(buffer.get() + r + first, data, chunk - first);
      r = w;
      l.read.store(r, std::memory_order_seq_cst);
      notify_lane(l);
      waiter.reset();
      if (test_hook_mid_stream_get && r < n) test_hook_mid_stream_get();
      continue;
    }
    if (l.aborted.load(std::memory_order_acquire) != 0) return false;
    if (watch.stuck(w) && !process_alive(owner)) return false;  // producer died mid-message
    waiter.wait(
        [&] {
          return l.written.load(std::memory_order_seq_cst) != w || l.aborted.load(std::memory_order_relaxed) != 0;
        },
        l.seq, l.sleeping, Deadline::never());
  }
  sink(std::span<const std::byte>(buffer.get(), n));
  return true;
}

bool Ring::wait_nonempty(const Deadline& deadline) {
  RingHeader& h = *header_;
  Waiter waiter;
  for (;;) {
    std::uint64_t tail = h.tail.load(std::memory_order_seq_cst);
    if (tail > h.head.load(std::memory_order_acquire)) return true;
    if (deadline.expired()) return false;
    waiter.wait([&] { return h.tail.load(std::memory_order_seq_cst) != tail; }, h.not_empty_seq,
                h.consumers_sleeping, deadline);
  }
}

std::size_t Ring::size() const noexcept {
  std::uint64_t head = header_->head.load(std::memory_order_acquire);
  std::uint64_t tail = header_->tail.load(std::memory_order_acquire);
  if (tail <= head) return 0;
  // Positions between head and tail never straddle a jump (one is only made
  // when head == tail), so each lap between them is a full one.
  const std::uint64_t laps = (tail >> shift_) - (head >> shift_);
  const std::uint64_t n = laps * capacity_ + (tail & mask_) - (head & mask_);
  return static_cast<std::size_t>(std::min<std::uint64_t>(n, capacity_));
}

void Ring::add_unfinished() noexcept { header_->unfinished.fetch_add(1, std::memory_order_seq_cst); }

bool Ring::task_done() noexcept {
  auto& u = header_->unfinished;
  std::uint64_t v = u.load(std::memory_order_acquire);
  do {
    if (v == 0) return false;
  } while (!u.compare_exchange_weak(v, v - 1, std::memory_order_seq_cst));
  if (v == 1) notify(header_->unfinished_seq, header_->join_waiters);
  return true;
}

bool Ring::wait_all_done(const Deadline& deadline) {
  auto& h = *header_;
  for (;;) {
    if (h.unfinished.load(std::memory_order_seq_cst) == 0) return true;
    std::uint32_t s = h.unfinished_seq.load(std::memory_order_seq_cst);
    h.join_waiters.store(1, std::memory_order_seq_cst);
    if (h.unfinished.load(std::memory_order_seq_cst) == 0) return true;
    if (deadline.expired()) return false;
    futex_wait(h.unfinished_seq, s, deadline);
  }
}

std::uint64_t Ring::unfinished() const noexcept { return header_->unfinished.load(std::memory_order_acquire); }

}  // namespace mpx::detail
