// The shared-memory MPMC message ring (see mpx/detail/ring.hpp for the contract).
//
// Layout of the mapping:
//   RingHeader                 tail, head, wake-up words, JoinableQueue count
//   RingClaimer[kClaimers]     who claims: id -> (pid, identity), see "Claimers"
//   RingCell[capacity]         one 64-byte cache line per message in flight
//   RingLane[all lanes]        claim word of each lane, 16 bytes: the classes of
//                              short lanes in ascending size, then the large lanes
//   RingStream[lanes]          streaming words of each large lane, 256 bytes
//   lane data                  each class packed (its bytes rounded up to 64),
//                              then the large lanes, lane_bytes each, page aligned
// All of it is zero at creation, which is a valid empty ring: creation
// touches only the header page, and the rest is charged and made resident as
// it is used (SharedMapping::reserved).
//
// Cells follow Vyukov's bounded MPMC queue, with the claim made on the cell
// itself so that it carries who claimed it. A cell's state word is
//   turn (32 bits) | phase (2 bits) | claimer or aux (30 bits)
// where turn = position / capacity (the lap). For position p of lap t:
//   FREE(t)        the producer of p may claim it (CAS -> WRITING(t, me))
//   WRITING(t,me)  being filled; FULL(t) publishes it (one release store)
//   FULL(t,aux)    ready; aux = kAbandoned marks a skipped half-written cell
//   READING(t,me)  claimed by a consumer; released as FREE(t+1)
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
// (turns are 32 bits): it is read as older.
//
// Grow: a grow ring's positions run over its base cells (index < base_cells_)
// and then over the growth file's cell segments (index >= base_cells_, up to
// capacity_ = 2^30). So that a backlog does not walk into new segments while
// base cells are free, the producer that claims base cell i looks at the
// next base cell first and may set kDivertBit in its claim (kept in FULL and
// READING until the cell is released), which changes where the lap goes on:
//   i = base-1: cell 0 is FREE for the next lap: the lap ends here, the next
//     one starts at cell 0 (without the bit: on into the first segment);
//   i < base-1: cell i+1 is not FREE for this lap (it still holds a message
//     of the last lap): the lap goes on at index base_cells_ (a "skip"; the
//     base cells past i are left to the last lap's messages).
// A cell seen FREE for a lap stays so until that lap claims it, so the lap
// never runs into an occupied base cell. Once in the segments, a lap only ends as before (a jump when
// empty), so the previous lap's segment cells are all consumed when the
// next lap skips into them. The header's `skip` word (position + 1) records
// the latest skip, for size(). A blocking put that would take the lap into
// the segments first gives the consumers kGrowAfter (10 ms) to free the next
// base cell (wait_before_growing, sleeping as a put on a full ring does): a consumer that keeps up, only a little behind
// a faster producer, then keeps the backlog in the base cells (new memory
// costs ~20 ns an item to fault in), and only a consumer that falls behind
// for longer makes the ring grow. A newer turn with a moved index
// is the usual "someone else got here first".
//
// Wake-ups: a side that found nothing spins briefly, then sets its
// "sleeping" flag, re-checks, and futex-waits on a sequence word. The other
// side, after publishing (seq_cst store), loads the flag (seq_cst) and only
// then pays for a syscall. A waiter killed while asleep leaves the flag set:
// the next notifier clears it and wakes nobody, once.
//
// Claimers: `me` above is the process' claimer word, the same in every claim
// it makes on this ring (cells and lanes): kClaimerBit | id, where id comes
// from the header's counter when the process first claims (then cached in
// its Ring, with its pid so that a forked child takes its own). The id's
// entry in the claimer table (id % kClaimers) holds (id, pid) and the
// process' identity (detail::current_process_ident: the pid's pidfs inode,
// or its start time). A waiter that suspects a claim's holder looks it up:
// the entry holds another id (retaken: that only happens once its owner is
// gone) or owner_gone(pid, identity) says so: dead, even when the pid has
// been reused since. An entry is retaken only from an owner that is gone;
// when all kClaimers entries that a registrant tries belong to live
// processes, it claims by its bare pid (no kClaimerBit), as all claims did
// before (liveness by pid: a pid reused within ~20 ms looks alive).
// The hot path pays one compare of the cached pid; registration is per
// process and ring, a few system calls.
//
// Lanes: a lane's claim word is (generation << 32) | owner's claimer word (0 = free);
// its pos word is the linked cell's position + 1 (0 = not linked). A message
// takes a lane of the smallest class it fits, then of the larger classes in
// turn, then a large lane (lowest free first). In each class producers take
// the lowest free lane at or above the class' shared hint, which every free
// lowers, so the lanes in use stay the lowest ones. A
// message that fits a lane is copied in before its cell is published, so it
// is complete the moment a consumer can see it. A longer one (larger than a
// large lane: short lanes never stream) is streamed: cell first, then
// chunks; the consumer copies them out as they arrive, the two sides
// meeting in the lane's RingStream.
//
// Growth (spill and grow rings: queues). A second memfd, sized once at
// creation (sparse: it costs nothing until written) and never resized, so
// no two processes can race an ftruncate; each process maps the pieces it
// touches, on demand, and keeps them mapped while the ring lives:
//   cell segments   kSegCells cells each: cells past base_cells_ (grow)
//   chunks          kMaxChunks of kChunkBytes: spilled messages (spill)
// Chunks are bump-allocated: the header's open word is gen | chunk | offset.
// Each chunk has a control word gen | sealed | count (blocks allocated and
// not yet read). A producer pins the open chunk (count + 1, if its gen still
// matches and it is not sealed) before it moves the offset, so a chunk never
// frees under it; the producer that opens a new chunk seals the old one.
// Whoever brings a sealed chunk's count to zero (or seals one at zero)
// punches it out of the file (its memory is returned) and frees its bit in
// the header's bitmap. A message larger than a chunk takes a run of
// consecutive chunks of its own, sealed from the start. Order still comes
// from the cells: a block is referenced by the cell its put claims.
#include "mpx/detail/ring.hpp"

#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>
#include <string>

#include "mpx/detail/futex.hpp"
#include "mpx/detail/identity.hpp"
#include "mpx/detail/unique_fd.hpp"
#include "mpx/queue.hpp"  // QueueError
#include "mpx/sync_error.hpp"  // OSError

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
// (claimer words are below 2^29, kAbandoned is 1).
constexpr std::uint32_t kJumpBit = 1u << 29;
// In the low bits of a claimed state (WRITING, FULL, READING) of a grow
// ring's base cell: the lap does not go on at the next base cell (see "Grow").
constexpr std::uint32_t kDivertBit = 1u << 28;
// A claimer word (see "Claimers"): kClaimerBit | id, or a bare pid (below 2^22).
constexpr std::uint32_t kClaimerBit = 1u << 27;
constexpr std::uint32_t kClaimerIdMask = kClaimerBit - 1;
constexpr std::uint32_t kClaimers = 1024;  // entries of the claimer table: 16 KiB
// An entry's key: (kKeyUsed | id) << 32 | pid; pid 0 while it is being filled in.
constexpr std::uint32_t kKeyUsed = 0x80000000u;
constexpr std::uint64_t make_key(std::uint32_t id, pid_t pid) {
  return (std::uint64_t{kKeyUsed | id} << 32) | static_cast<std::uint32_t>(pid);
}
constexpr std::uint32_t key_id(std::uint64_t k) { return static_cast<std::uint32_t>(k >> 32) & ~kKeyUsed; }
constexpr pid_t key_pid(std::uint64_t k) { return static_cast<pid_t>(static_cast<std::uint32_t>(k)); }

constexpr std::uint32_t kKindBlock = 2;
// Growth file.
constexpr std::uint64_t kGrowCapacity = std::uint64_t{1} << 30;  // cells of a grow ring
constexpr std::uint64_t kSegCells = std::uint64_t{1} << 18;      // 16 MiB of cells per segment
constexpr std::size_t kChunkBytes = std::size_t{64} << 20;
constexpr std::uint32_t kMaxChunks = 4096;  // 256 GiB of spilled messages
constexpr std::uint64_t kNoOpen = ~std::uint64_t{0};
constexpr std::uint64_t kCloseDrainedAt = std::uint64_t{1} << 20;  // see unpin_chunk
constexpr auto kSpillAfter = std::chrono::microseconds(50);        // see put_large
constexpr auto kGrowAfter = std::chrono::milliseconds(10);         // see wait_before_growing
// open word: gen (20 bits) | chunk (12 bits) | offset (32 bits)
constexpr std::uint64_t make_open(std::uint32_t gen, std::uint32_t chunk, std::uint64_t off) {
  return (std::uint64_t{gen & 0xfffffu} << 44) | (std::uint64_t{chunk & 0xfffu} << 32) | off;
}
constexpr std::uint32_t open_gen(std::uint64_t v) { return static_cast<std::uint32_t>(v >> 44); }
constexpr std::uint32_t open_chunk(std::uint64_t v) { return static_cast<std::uint32_t>((v >> 32) & 0xfffu); }
constexpr std::uint64_t open_off(std::uint64_t v) { return v & 0xffffffffu; }
// chunk control word: gen (20 bits) << 40 | sealed << 39 | count (32 bits)
constexpr std::uint64_t kSealed = std::uint64_t{1} << 39;
constexpr std::uint64_t make_ctl(std::uint32_t gen, bool sealed, std::uint32_t count) {
  return (std::uint64_t{gen & 0xfffffu} << 40) | (sealed ? kSealed : 0) | count;
}
constexpr std::uint32_t ctl_gen(std::uint64_t c) { return static_cast<std::uint32_t>(c >> 40); }
constexpr std::uint32_t ctl_count(std::uint64_t c) { return static_cast<std::uint32_t>(c); }

enum Phase : std::uint32_t { kFree = 0, kWriting = 1, kFull = 2, kReading = 3 };

constexpr std::uint64_t make_state(std::uint32_t turn, Phase phase, std::uint32_t low) {
  return (std::uint64_t{turn} << 32) | (std::uint64_t{phase} << 30) | (low & 0x3fffffffu);
}
constexpr std::uint32_t turn_of_state(std::uint64_t w) { return static_cast<std::uint32_t>(w >> 32); }
constexpr Phase phase_of(std::uint64_t w) { return static_cast<Phase>((w >> 30) & 3u); }
constexpr std::uint32_t low_of(std::uint64_t w) { return static_cast<std::uint32_t>(w & 0x3fffffffu); }
// The claimer word of the process holding a WRITING or READING cell.
constexpr std::uint32_t holder_of(std::uint64_t w) { return low_of(w) & ~(kJumpBit | kDivertBit); }
// A FULL state's aux (0 or kAbandoned), without the divert bit.
constexpr std::uint32_t aux_of(std::uint64_t w) { return low_of(w) & ~kDivertBit; }
// Signed lap distance of state w from lap t (wraps correctly at 2^32).
constexpr std::int32_t lap_diff(std::uint64_t w, std::uint32_t t) {
  return static_cast<std::int32_t>(turn_of_state(w) - t);
}

// The claimer word in a lane's claim (0: free).
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

struct BlockRef {
  std::uint32_t chunk;
  std::uint32_t gen;
  std::uint64_t offset;
  std::uint64_t size;  // at the same place as LaneRef::size (message_bytes)
};
static_assert(sizeof(BlockRef) <= Ring::kInlineBytes && offsetof(BlockRef, size) == offsetof(LaneRef, size));

// Chunks a block of `bytes` spans (more than one: a run of its own).
std::uint32_t chunks_for(std::uint64_t bytes) {
  return static_cast<std::uint32_t>(bytes <= kChunkBytes ? 1 : (bytes + kChunkBytes - 1) / kChunkBytes);
}

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

// A lane claim whose claimer word carries this bit is being freed by that claimer.
constexpr std::uint32_t kFreeingBit = 0x80000000u;

constexpr std::size_t kClassHints = 3;  // Ring::kLaneClasses


}  // namespace

struct alignas(64) RingHeader {
  std::uint64_t magic;
  std::uint64_t capacity;
  alignas(64) std::atomic<std::uint64_t> tail;
  alignas(64) std::atomic<std::uint64_t> head;
  alignas(64) std::atomic<std::uint32_t> not_empty_seq;
  std::atomic<std::uint32_t> consumers_sleeping;
  std::atomic<std::uint32_t> reader_armed;  // on the line notify_consumers reads anyway
  alignas(64) std::atomic<std::uint32_t> not_full_seq;
  std::atomic<std::uint32_t> producers_sleeping;
  alignas(64) std::atomic<std::uint32_t> lane_free_seq;
  std::atomic<std::uint32_t> lane_waiters;
  std::atomic<std::uint32_t> lane_hint[kClassHints];  // per class of short lanes: see acquire_lane
  std::atomic<std::uint32_t> lanes_busy;  // spill rings: the last scan found no lane; go straight to a block
  alignas(64) std::atomic<std::uint64_t> skip;  // grow rings: the latest skipping cell's position + 1 (see "Grow")
  alignas(64) std::atomic<std::uint32_t> next_claimer;  // the next claimer id to hand out
  alignas(64) std::atomic<std::uint64_t> unfinished;
  std::atomic<std::uint32_t> unfinished_seq;
  std::atomic<std::uint32_t> join_waiters;
  alignas(64) std::atomic<std::uint64_t> queued_bytes;
  std::atomic<std::uint32_t> bytes_seq;
  std::atomic<std::uint32_t> bytes_waiters;
  alignas(64) std::atomic<std::uint64_t> open_block;
  std::atomic<std::uint32_t> chunks_used;
  std::atomic<std::uint64_t> chunk_bits[kMaxChunks / 64];
};

struct RingClaimer {
  std::atomic<std::uint64_t> key;    // make_key(id, pid); 0: never used
  std::atomic<std::uint64_t> ident;  // current_process_ident() of pid
};
static_assert(sizeof(RingClaimer) == 16);

struct alignas(64) RingCell {
  std::atomic<std::uint64_t> state;
  std::uint32_t len;
  std::uint32_t kind;
  std::byte data[Ring::kInlineBytes];
};
static_assert(sizeof(RingCell) == 64);

struct RingLane {
  std::atomic<std::uint64_t> claim;
  std::atomic<std::uint64_t> pos;
};
static_assert(sizeof(RingLane) == 16);

// Where a large lane's producer and consumer meet while a message streams.
struct alignas(64) RingStream {
  std::atomic<std::uint32_t> aborted;
  alignas(64) std::atomic<std::uint64_t> written;
  alignas(64) std::atomic<std::uint64_t> read;
  alignas(64) std::atomic<std::uint32_t> seq;
  std::atomic<std::uint32_t> sleeping;
};

// This process' view of the growth file: the pieces it has mapped so far
// (mapped on first use, kept while the ring lives; fork inherits them).
struct Ring::Growth {
  UniqueFd fd;
  std::uint64_t seg_off = 0;    // file offset of cell segment 0
  std::uint64_t chunk_off = 0;  // file offset of chunk 0
  std::size_t segments = 0;
  // Tables of this process' mappings, made on first use (most queues never
  // grow: they cost no memory then).
  mutable std::atomic<std::atomic<RingCell*>*> segs{nullptr};
  mutable std::atomic<std::atomic<std::byte*>*> chunks{nullptr};
  std::atomic<std::uint64_t>* ctl = nullptr;  // chunk control words, in the base mapping

  Growth() = default;
  Growth(const Growth&) = delete;
  Growth& operator=(const Growth&) = delete;
  ~Growth() {
    if (auto* t = segs.load(std::memory_order_relaxed)) {
      for (std::size_t i = 0; i < segments; ++i)
        if (auto* p = t[i].load(std::memory_order_relaxed)) ::munmap(p, kSegCells * sizeof(RingCell));
      delete[] t;
    }
    if (auto* t = chunks.load(std::memory_order_relaxed)) {
      for (std::size_t i = 0; i < kMaxChunks; ++i)
        if (auto* p = t[i].load(std::memory_order_relaxed)) ::munmap(p, kChunkBytes);
      delete[] t;
    }
  }
  template <class T>
  static std::atomic<T*>* table(std::atomic<std::atomic<T*>*>& slot, std::size_t n) {
    std::atomic<T*>* t = slot.load(std::memory_order_acquire);
    if (t) return t;
    auto* mine = new std::atomic<T*>[n]();
    if (slot.compare_exchange_strong(t, mine, std::memory_order_acq_rel)) return mine;
    delete[] mine;  // another thread made it first
    return t;
  }
  void* map(std::uint64_t off, std::size_t len, bool populate = false) const {
    const int flags = MAP_SHARED | (populate ? MAP_POPULATE : 0);
    void* p = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, flags, fd.get(), static_cast<off_t>(off));
    if (p == MAP_FAILED)
      throw OSError(errno, "mpx queue: mmap of " + std::to_string(len) + " bytes of the queue's growth file");
    return p;
  }
  // The mapping in `slot`, made now if this process has none yet.
  template <class T>
  T* install(std::atomic<T*>& slot, std::uint64_t off, std::size_t len, bool populate = false) const {
    T* p = slot.load(std::memory_order_acquire);
    if (p) return p;
    auto* mine = static_cast<T*>(map(off, len, populate));
    if (slot.compare_exchange_strong(p, mine, std::memory_order_acq_rel)) return mine;
    ::munmap(mine, len);  // another thread mapped it first
    return p;
  }
};

// A temporary mapping of a run of chunks (a message larger than a chunk).
class RunMapping {
 public:
  RunMapping(void* p, std::size_t len) : p_(p), len_(len) {}
  RunMapping(const RunMapping&) = delete;
  RunMapping& operator=(const RunMapping&) = delete;
  ~RunMapping() { ::munmap(p_, len_); }
  [[nodiscard]] std::byte* data() const { return static_cast<std::byte*>(p_); }

 private:
  void* p_;
  std::size_t len_;
};

struct Ring::Block {
  std::uint32_t chunk = 0;
  std::uint32_t gen = 0;
  std::uint32_t chunks = 1;
  std::uint64_t offset = 0;
};

// The size of the message a published cell holds.
static std::size_t message_bytes(const RingCell& c) {
  if (c.kind == kKindInline) return c.len;
  LaneRef ref;  // BlockRef keeps its size at the same place
  std::memcpy(&ref, c.data, sizeof ref);
  return static_cast<std::size_t>(ref.size);
}

Ring::Ring() = default;
Ring::~Ring() = default;
Ring::Ring(Ring&&) noexcept = default;
Ring& Ring::operator=(Ring&&) noexcept = default;

bool process_alive(pid_t pid) noexcept {
  if (pid <= 0) return false;
  if (pid == current_pid()) return true;
  return !owner_gone(pid, 0);  // a zombie (killed, not yet reaped) counts as dead
}

std::uint32_t Ring::claimer() {
  const pid_t pid = current_pid();
  const std::uint64_t c = claimer_.word.load(std::memory_order_relaxed);
  if (static_cast<pid_t>(c >> 32) == pid) [[likely]] return static_cast<std::uint32_t>(c);
  const std::uint32_t me = register_claimer();
  claimer_.word.store((std::uint64_t{static_cast<std::uint32_t>(pid)} << 32) | me, std::memory_order_relaxed);
  return me;
}

std::uint32_t Ring::register_claimer() {
  const pid_t pid = current_pid();
  const std::uint64_t ident = current_process_ident();
  for (std::uint32_t tries = 0; tries < kClaimers; ++tries) {
    const std::uint32_t id = header_->next_claimer.fetch_add(1, std::memory_order_relaxed) & kClaimerIdMask;
    RingClaimer& e = claimers_[id % kClaimers];
    std::uint64_t k = e.key.load(std::memory_order_acquire);
    // Never used, or its owner is gone (then no live claim names it any more).
    if (k != 0 && (key_pid(k) == 0 || !owner_gone(key_pid(k), e.ident.load(std::memory_order_acquire)))) continue;
    if (!e.key.compare_exchange_strong(k, make_key(id, 0), std::memory_order_acq_rel)) continue;
    e.ident.store(ident, std::memory_order_relaxed);
    e.key.store(make_key(id, pid), std::memory_order_release);  // before any claim that names id
    return kClaimerBit | id;
  }
  return static_cast<std::uint32_t>(pid);  // every entry tried is held by a live process
}

bool Ring::claimer_gone(std::uint32_t who) const noexcept {
  if (!(who & kClaimerBit)) return !process_alive(static_cast<pid_t>(who));
  const std::uint32_t id = who & kClaimerIdMask;
  const RingClaimer& e = claimers_[id % kClaimers];
  const std::uint64_t k = e.key.load(std::memory_order_acquire);
  if (key_id(k) != id) return true;  // retaken, which needs its owner gone
  const pid_t pid = key_pid(k);
  if (pid == 0) return false;  // not possible for a claim's id (it was filled in before): be safe
  const std::uint64_t ident = e.ident.load(std::memory_order_acquire);
  if (e.key.load(std::memory_order_acquire) != k) return true;  // retaken meanwhile
  return owner_gone(pid, ident);
}

// The sizes and offsets that follow from the options, the same in every
// process that maps the ring (create, attach).
struct Ring::Layout {
  std::size_t claimers_off = 0;
  std::size_t cells_off = 0;
  std::size_t lanes_off = 0;
  std::size_t streams_off = 0;
  std::size_t ctl_off = 0;
  std::size_t data_off = 0;
  std::size_t total = 0;
};

Ring::Layout Ring::lay_out(const RingOptions& options) {
  // Only Queue passes user-chosen options; its error names them.
  auto bad = [](const char* rule) { throw QueueError(std::string("mpx queue: QueueOptions: ") + rule); };
  if (options.capacity == 0 || options.capacity > (std::size_t{1} << 26)) bad("capacity must be in [1, 2^26]");
  if (options.lanes == 0 || options.lanes > 4096) bad("lanes must be in [1, 4096]");
  if (options.lane_bytes < 4096) bad("lane_bytes must be >= 4096");
  struct Class {
    std::size_t count, bytes;
    const char* rule_count;
    const char* rule_bytes;
  };
  static_assert(kLaneClasses == kClassHints);
  Class given[kLaneClasses] = {
      {options.tiny_lanes, options.tiny_lane_bytes, "tiny_lanes must be at most 65536",
       "tiny_lane_bytes must be in (48, lane_bytes]"},
      {options.mid_lanes, options.mid_lane_bytes, "mid_lanes must be at most 65536",
       "mid_lane_bytes must be in (48, lane_bytes]"},
      {options.small_lanes, options.small_lane_bytes, "small_lanes must be at most 65536",
       "small_lane_bytes must be in (48, lane_bytes]"},
  };
  for (const Class& c : given) {
    if (c.count > 65536) bad(c.rule_count);
    if (c.count && (c.bytes <= kInlineBytes || c.bytes > options.lane_bytes)) bad(c.rule_bytes);
  }
  options_ = options;
  base_cells_ = options.capacity;
  capacity_ = options.grow ? kGrowCapacity : options.capacity;
  spill_ = options.spill;
  max_bytes_ = options.max_bytes;
  while ((std::size_t{1} << shift_) < capacity_) ++shift_;
  mask_ = (std::uint64_t{1} << shift_) - 1;
  // The classes with lanes, in ascending size (a stable sort: the same
  // order in every process), packed one after the other.
  std::stable_sort(std::begin(given), std::end(given),
                   [](const Class& a, const Class& b) { return a.bytes < b.bytes; });
  class_count_ = 0;
  short_lanes_ = 0;
  std::size_t data = 0;
  for (const Class& c : given) {
    if (c.count == 0) continue;
    LaneClass& k = classes_[class_count_++];
    k = LaneClass{short_lanes_, c.count, c.bytes, round_up(c.bytes, 64), data};
    short_lanes_ += k.count;
    data += k.count * k.stride;
  }
  lane_count_ = short_lanes_ + options.lanes;
  large_off_ = round_up(data, 4096);
  lane_bytes_ = options.lane_bytes;
  lane_stride_ = round_up(options.lane_bytes, 4096);
  Layout l;
  l.claimers_off = round_up(sizeof(RingHeader), 64);
  l.cells_off = l.claimers_off + kClaimers * sizeof(RingClaimer);
  l.lanes_off = l.cells_off + base_cells_ * sizeof(RingCell);
  l.streams_off = round_up(l.lanes_off + lane_count_ * sizeof(RingLane), 64);
  l.ctl_off = l.streams_off + options.lanes * sizeof(RingStream);
  const std::size_t ctl_bytes = spill_ ? kMaxChunks * sizeof(std::uint64_t) : 0;
  l.data_off = round_up(l.ctl_off + ctl_bytes, 4096);
  l.total = l.data_off + large_off_ + options.lanes * lane_stride_;
  return l;
}

void Ring::place(const Layout& l) {
  auto* base = static_cast<std::byte*>(mapping_.data());
  header_ = reinterpret_cast<RingHeader*>(base);
  armed_ = &header_->reader_armed;
  claimers_ = reinterpret_cast<RingClaimer*>(base + l.claimers_off);
  cells_ = reinterpret_cast<RingCell*>(base + l.cells_off);
  lanes_ = reinterpret_cast<RingLane*>(base + l.lanes_off);
  streams_ = reinterpret_cast<RingStream*>(base + l.streams_off);
  lane_data_ = base + l.data_off;
}

std::unique_ptr<Ring::Growth> Ring::make_growth(UniqueFd fd, const Layout& l) const {
  auto g = std::make_unique<Growth>();
  g->fd = std::move(fd);
  g->segments = options_.grow ? static_cast<std::size_t>((capacity_ - base_cells_ + kSegCells - 1) / kSegCells) : 0;
  g->chunk_off = round_up(g->segments * kSegCells * sizeof(RingCell), std::size_t{2} << 20);
  if (spill_) g->ctl = reinterpret_cast<std::atomic<std::uint64_t>*>(static_cast<std::byte*>(mapping_.data()) + l.ctl_off);
  return g;
}

Ring Ring::create(const RingOptions& options) {
  Ring r;
  const Layout l = r.lay_out(options);
  r.mapping_ = SharedMapping::reserved(l.total, "a message ring (Queue or Pipe)");
  // Zero-filled memory is a valid initial state: every cell FREE(0), every
  // lane free with generation 0 and unlinked, every chunk free. Only the
  // constants need writing; nothing past the header page is touched.
  new (r.mapping_.data()) RingHeader{};
  r.place(l);
  r.header_->magic = kMagic;
  r.header_->capacity = r.capacity_;
  r.header_->open_block.store(kNoOpen, std::memory_order_relaxed);
  r.header_->reader_armed.store(1, std::memory_order_relaxed);  // the first put signals a reader's descriptor
  if (options.grow || options.spill) {
    UniqueFd fd(::memfd_create("mpx-queue-growth", MFD_CLOEXEC));
    if (!fd) throw OSError(errno, "mpx queue: memfd_create for the queue's growth file");
    r.growth_ = r.make_growth(std::move(fd), l);
    const std::uint64_t size = r.growth_->chunk_off + (r.spill_ ? std::uint64_t{kMaxChunks} * kChunkBytes : 0);
    if (::ftruncate(r.growth_->fd.get(), static_cast<off_t>(size)) != 0)
      throw OSError(errno, "mpx queue: ftruncate of the queue's growth file to " + std::to_string(size) + " bytes");
  }
  return r;
}

Ring Ring::attach(const RingOptions& options, int base_fd, UniqueFd growth_fd) {
  Ring r;
  const Layout l = r.lay_out(options);
  struct stat st {};
  if (::fstat(base_fd, &st) != 0) throw OSError(errno, "mpx queue: fstat of a received ring");
  if (static_cast<std::uint64_t>(st.st_size) < l.total)
    throw QueueError("mpx queue: a received ring is smaller than its options say (" + std::to_string(st.st_size) +
                     " < " + std::to_string(l.total) + " bytes)");
  r.mapping_ = SharedMapping::of_fd(base_fd, l.total, "a received message ring");
  r.place(l);
  if (r.header_->magic != kMagic || r.header_->capacity != r.capacity_)
    throw QueueError("mpx queue: a received descriptor does not hold a ring made with these options");
  if (options.grow || options.spill) {
    if (!growth_fd) throw QueueError("mpx queue: a received ring lacks its growth file");
    r.growth_ = r.make_growth(std::move(growth_fd), l);
  }
  return r;
}

RingCell& Ring::cell_at(std::uint64_t pos) const {
  const std::uint64_t idx = pos & mask_;
  return idx < base_cells_ ? cells_[idx] : overflow_cell(idx);  // a grow ring's later segments
}

// A cell segment is reached by a backlog that walks through it: its pages
// are faulted in at once (MAP_POPULATE), not one fault per 64 cells.
RingCell& Ring::overflow_cell(std::uint64_t idx) const {
  const std::uint64_t rel = idx - base_cells_;
  const std::uint64_t seg = rel / kSegCells;
  RingCell* cells = growth_->install(Growth::table(growth_->segs, growth_->segments)[seg],
                                     growth_->seg_off + seg * kSegCells * sizeof(RingCell),
                                     kSegCells * sizeof(RingCell), true);
  return cells[rel % kSegCells];
}

std::byte* Ring::chunk_ptr(std::uint32_t chunk) const {
  return growth_->install(Growth::table(growth_->chunks, kMaxChunks)[chunk], growth_->chunk_off + std::uint64_t{chunk} * kChunkBytes,
                          kChunkBytes);
}

std::uint32_t Ring::turn_of(std::uint64_t pos) const { return static_cast<std::uint32_t>(pos >> shift_); }
std::uint64_t Ring::next_pos(std::uint64_t pos, std::uint64_t w) const {
  const bool jump = phase_of(w) == kReading && (low_of(w) & kJumpBit) != 0;
  const std::uint64_t idx = pos & mask_;
  const std::uint64_t next_lap = ((pos >> shift_) + 1) << shift_;
  if (phase_of(w) != kFree && (low_of(w) & kDivertBit) != 0)  // see "Grow"
    return idx + 1 == base_cells_ ? next_lap : (pos & ~mask_) | base_cells_;
  if (jump || idx + 1 == capacity_) return next_lap;
  return pos + 1;
}

std::uint32_t Ring::divert_at(std::uint64_t pos) const {
  const std::uint64_t idx = pos & mask_;
  if (!options_.grow || idx >= base_cells_ || base_cells_ < 2) return 0;
  const std::uint32_t t = turn_of(pos);
  const bool last = idx + 1 == base_cells_;
  const std::uint64_t w = cells_[last ? 0 : idx + 1].state.load(std::memory_order_acquire);
  const bool free = phase_of(w) == kFree && lap_diff(w, last ? t + 1 : t) <= 0;  // a newer turn: not known free
  return free == last ? kDivertBit : 0;
}

bool Ring::leaves_base(std::uint64_t pos, std::uint32_t divert) const {
  const std::uint64_t idx = pos & mask_;
  if (!options_.grow || idx >= base_cells_) return false;
  return idx + 1 == base_cells_ ? divert == 0 : divert != 0;
}

std::uint32_t Ring::wait_before_growing(std::uint64_t pos, std::uint32_t divert, const Deadline& deadline) const {
  // As a put on a full fixed ring waits (spin, yield, then sleep until a
  // consumer frees a cell), but only until kGrowAfter or the put's deadline.
  RingHeader& h = *header_;
  const auto left = deadline.remaining();
  const Deadline until = left && *left < kGrowAfter ? deadline : Deadline::after(kGrowAfter);
  auto moved_on = [&] { return h.tail.load(std::memory_order_acquire) != pos; };  // another producer took it
  Waiter waiter;
  while (leaves_base(pos, divert) && !moved_on() && !until.expired()) {
    waiter.wait([&] { return !leaves_base(pos, divert_at(pos)) || moved_on(); }, h.not_full_seq,
                h.producers_sleeping, until);
    divert = divert_at(pos);
  }
  return divert;
}

void Ring::note_skip(std::uint64_t pos, std::uint64_t w) {
  if ((low_of(w) & kDivertBit) && (pos & mask_) + 1 < base_cells_ &&
      header_->skip.load(std::memory_order_relaxed) != pos + 1)
    header_->skip.store(pos + 1, std::memory_order_release);
}
RingLane& Ring::lane(std::size_t i) const { return lanes_[i]; }
RingStream& Ring::stream(std::size_t i) const { return streams_[i - short_lanes_]; }
std::byte* Ring::lane_data(std::size_t i) const {
  if (i >= short_lanes_) return lane_data_ + large_off_ + (i - short_lanes_) * lane_stride_;
  std::size_t c = 0;
  while (i >= classes_[c].first + classes_[c].count) ++c;
  return lane_data_ + classes_[c].data_off + (i - classes_[c].first) * classes_[c].stride;
}
std::size_t Ring::lane_size(std::size_t i) const {
  if (i >= short_lanes_) return lane_bytes_;
  std::size_t c = 0;
  while (i >= classes_[c].first + classes_[c].count) ++c;
  return classes_[c].bytes;
}

void Ring::notify_consumers() { notify(header_->not_empty_seq, header_->consumers_sleeping); }
void Ring::notify_producers() { notify(header_->not_full_seq, header_->producers_sleeping); }
void Ring::notify_lane(RingStream& s) { notify(s.seq, s.sleeping); }
void Ring::notify_lane_free() { notify(header_->lane_free_seq, header_->lane_waiters); }

void Ring::release_cell(RingCell& cell, std::uint64_t pos) {
  cell.state.store(make_state(turn_of(pos) + 1, kFree, 0), std::memory_order_seq_cst);
  notify_producers();
}

template <class Fill>
bool Ring::put_cell(Fill&& fill, const Deadline& deadline, bool block, const StopCheck* stop) {
  RingHeader& h = *header_;
  const std::uint32_t me = claimer();
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
      std::uint32_t divert = divert_at(pos);
      if (block && leaves_base(pos, divert)) divert = wait_before_growing(pos, divert, deadline);
      const std::uint64_t mine = make_state(t, kWriting, me | divert);
      if (c.state.compare_exchange_strong(w, mine, std::memory_order_acq_rel)) {
        note_skip(pos, mine);
        advance(h.tail, pos, next_pos(pos, mine));
        if (test_hook_after_claim_put) test_hook_after_claim_put();
        fill(c, pos);
        c.state.store(make_state(t, kFull, divert), std::memory_order_seq_cst);
        notify_consumers();
        return true;
      }
      continue;
    }
    if (diff == 0) {
      // Someone claimed this position (maybe and died before moving tail): help.
      const std::uint64_t next = next_pos(pos, w);
      if (phase_of(w) == kReading && (low_of(w) & kJumpBit)) advance(h.head, pos, next);  // head first, as its maker
      note_skip(pos, w);  // in case its claimer died before it did
      advance(h.tail, pos, next);
      continue;
    }
    {
      // An older lap's message still occupies the cell: the ring is full.
      if (!block || deadline.expired() || stopped(waiter)) return false;
      if (phase_of(w) == kReading && watch.stuck(w) && claimer_gone(holder_of(w))) {
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
  if (max_bytes_ && !reserve_bytes(message.size(), deadline, block)) return false;
  bool ok = false;
  if (message.size() > kInlineBytes) {
    ok = put_large(message, deadline, block, stop);
  } else {
    ok = put_cell(
        [&](RingCell& c, std::uint64_t) {
          c.kind = kKindInline;
          c.len = static_cast<std::uint32_t>(message.size());
          if (!message.empty()) std::memcpy(c.data, message.data(), message.size());
        },
        deadline, block, stop);
  }
  if (!ok && max_bytes_) release_bytes(message.size());
  return ok;
}

bool Ring::get(ByteSink sink, const Deadline& deadline, bool block) {
  RingHeader& h = *header_;
  const std::uint32_t me = claimer();
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
      if (!c.state.compare_exchange_strong(w, make_state(t, kReading, me | (low_of(w) & kDivertBit)),
                                           std::memory_order_acq_rel))
        continue;
      advance(h.head, pos, next_pos(pos, w));
      if (aux_of(w) == kAbandoned) {
        release_cell(c, pos);
        continue;
      }
      if (test_hook_after_claim_get) test_hook_after_claim_get();
      struct Release {
        Ring* ring;
        RingCell& cell;
        std::uint64_t pos;
        std::size_t bytes;  // to give back to the byte budget
        ~Release() {
          ring->release_cell(cell, pos);
          if (bytes) ring->release_bytes(bytes);
        }
      } release{this, c, pos, max_bytes_ ? message_bytes(c) : 0};
      if (c.kind == kKindInline) {
        sink(std::span<const std::byte>(c.data, c.len));
        return true;
      }
      if (c.kind == kKindBlock) {
        read_block(c, sink);
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
      if ((stuck || giving_up) && claimer_gone(holder_of(w))) {
        if (c.state.compare_exchange_strong(w, make_state(t, kFull, kAbandoned | (low_of(w) & kDivertBit)),
                                            std::memory_order_acq_rel))
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
  const std::uint32_t me = claimer();
  Waiter waiter;
  StopPoll stopped(stop);
  bool check_orphans = false;
  StuckWatch watch;  // lanes busy for a liveness tick: look for dead holders
  // The smallest class the message fits first, then the larger ones, each
  // from its shared hint (the lowest lane of the class that may be free:
  // frees lower it, claims raise it past the lane taken), so the lanes in use
  // stay the lowest ones and a long backlog is not rescanned on every put;
  // then the large lanes. Lanes of the classes too small for the message
  // come before `first` and are never claimed here.
  std::size_t fit = 0;
  while (fit < class_count_ && bytes > classes_[fit].bytes) ++fit;
  const std::size_t first = fit < class_count_ ? classes_[fit].first : short_lanes_;
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
    for (std::size_t c = fit; c < class_count_; ++c) {
      const LaneClass& k = classes_[c];
      std::uint32_t hint = h.lane_hint[c].load(std::memory_order_acquire);
      const std::size_t start = hint < k.count ? hint : 0;
      for (std::size_t j = 0; j < k.count; ++j) {
        const std::size_t rel = start + j < k.count ? start + j : start + j - k.count;
        if (try_claim(k.first + rel)) {
          // Unless a free lowered the hint meanwhile.
          h.lane_hint[c].compare_exchange_strong(hint, static_cast<std::uint32_t>(rel + 1),
                                                 std::memory_order_acq_rel);
          return static_cast<int>(k.first + rel);
        }
      }
    }
    // Lowest free large lane first: the lanes in use stay few and warm in cache.
    for (std::size_t idx = short_lanes_; idx < lane_count_; ++idx)
      if (try_claim(idx)) return static_cast<int>(idx);
    if (check_orphans)
      for (std::size_t idx = 0; idx < first; ++idx) {  // recover the smaller classes' lanes too (never claim them)
        RingLane& l = lane(idx);
        const std::uint64_t claim = l.claim.load(std::memory_order_acquire);
        if (claim_pid(claim) != 0 && lane_orphaned(l, claim)) free_lane(l, claim);
      }
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
  if (claim_pid(claim) & kFreeingBit) return claimer_gone(claim_pid(claim) & ~kFreeingBit);
  if (linked == kNoPos) return claimer_gone(claim_pid(claim));  // never linked to a cell
  const std::uint64_t pos = linked - 1;
  RingCell& c = cell_at(pos);
  std::uint64_t w = c.state.load(std::memory_order_acquire);
  std::int32_t diff = lap_diff(w, turn_of(pos));
  if (diff > 0) return true;  // its cell was consumed or recycled
  if (diff < 0) return false;
  switch (phase_of(w)) {
    case kFull: return aux_of(w) == kAbandoned;  // skipped cells never free their lane
    case kWriting:
    case kReading: return claimer_gone(holder_of(w));
    case kFree: return false;
  }
  return false;
}

void Ring::free_lane(RingLane& l, std::uint64_t claim) {
  // Two steps so that only one of several concurrent freers resets pos, and
  // a new claimer always finds the lane unlinked: claim -> "being freed by
  // me" -> free.
  const std::uint64_t gen = std::uint64_t{claim_gen(claim)} << 32;
  const std::uint64_t freeing = gen | (claimer() | kFreeingBit);
  if (!l.claim.compare_exchange_strong(claim, freeing, std::memory_order_acq_rel)) return;
  l.pos.store(kNoPos, std::memory_order_release);
  l.claim.store(gen, std::memory_order_seq_cst);
  if (header_->lanes_busy.load(std::memory_order_relaxed) != 0) header_->lanes_busy.store(0, std::memory_order_relaxed);
  lower_lane_hint(static_cast<std::size_t>(&l - lanes_));
  notify_lane_free();
}

void Ring::lower_lane_hint(std::size_t idx) {
  if (idx >= short_lanes_) return;
  std::size_t c = 0;
  while (idx >= classes_[c].first + classes_[c].count) ++c;
  const auto rel = static_cast<std::uint32_t>(idx - classes_[c].first);
  auto& hint = header_->lane_hint[c];
  std::uint32_t cur = hint.load(std::memory_order_relaxed);
  while (rel < cur && !hint.compare_exchange_weak(cur, rel, std::memory_order_acq_rel)) {
  }
}

bool Ring::put_large(std::span<const std::byte> message, const Deadline& deadline, bool block,
                     const StopCheck* stop) {
  if (spill_) {
    // A free lane if there is one (one scan, skipped while the last one found
    // none), else a block of the growth file: a spilling put never waits for
    // a consumer to free room.
    // A blocking put first waits a moment for a lane (kSpillAfter): a
    // consumer that keeps up frees one within microseconds, and the producer
    // stays in the warm lanes instead of running ahead into fresh memory.
    RingHeader& h = *header_;
    if (message.size() <= lane_bytes_ && h.lanes_busy.load(std::memory_order_relaxed) == 0) {
      const Deadline brief = Deadline::after(kSpillAfter);
      const Deadline& until = block && !deadline.expired() ? (deadline.remaining() && *deadline.remaining() < kSpillAfter ? deadline : brief) : deadline;
      int idx = acquire_lane(message.size(), until, block, stop);
      if (idx >= 0) return put_lane(idx, message, deadline, block, stop);
      h.lanes_busy.store(1, std::memory_order_relaxed);  // until a lane is freed: straight to a block
    }
    Block b;
    if (alloc_block(message.size(), b)) return put_block(b, message, deadline, block, stop);
    // Every chunk is taken (256 GiB spilled): wait for a lane as a ring without spill.
  }
  int idx = acquire_lane(message.size(), deadline, block, stop);
  if (idx < 0) return false;
  return put_lane(idx, message, deadline, block, stop);
}

bool Ring::put_lane(int idx, std::span<const std::byte> message, const Deadline& deadline, bool block,
                    const StopCheck* stop) {
  RingLane& l = lane(static_cast<std::size_t>(idx));
  const std::uint64_t claim = l.claim.load(std::memory_order_acquire);
  std::byte* data = lane_data(static_cast<std::size_t>(idx));
  const std::uint64_t n = message.size();
  const std::uint64_t lane_bytes = lane_size(static_cast<std::size_t>(idx));
  const bool fits = n <= lane_bytes;
  if (fits) {
    std::memcpy(data, message.data(), n);  // published with the cell
  } else {
    RingStream& s = stream(static_cast<std::size_t>(idx));  // only large lanes stream
    s.aborted.store(0, std::memory_order_relaxed);
    s.read.store(0, std::memory_order_relaxed);
    s.written.store(0, std::memory_order_release);
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
  RingStream& s = stream(static_cast<std::size_t>(idx));
  RingCell& c = cell_at(pos);
  const std::uint32_t t = turn_of(pos);
  std::uint64_t w = 0;
  Waiter waiter;
  StuckWatch watch;
  StopPoll stopped(stop);
  while (w < n) {
    std::uint64_t r = s.read.load(std::memory_order_acquire);
    std::uint64_t space = lane_bytes - (w - r);
    if (space > 0) {
      std::uint64_t chunk = std::min<std::uint64_t>({space, n - w, kStreamChunk});
      std::uint64_t off = w % lane_bytes;
      std::uint64_t first = std::min<std::uint64_t>(chunk, lane_bytes - off);
      std::memcpy(data + off, message.data() + w, first);
      if (chunk > first) std::memcpy(data, message.data() + w + first, chunk - first);
      w += chunk;
      s.written.store(w, std::memory_order_seq_cst);
      notify_lane(s);
      waiter.reset();
      if (test_hook_mid_stream_put && w < n) test_hook_mid_stream_put();
      continue;
    }
    // Lane full: wait for the consumer. If it died holding the message, the
    // message is lost with it; the lane is ours to free.
    std::uint64_t cw = c.state.load(std::memory_order_acquire);
    if (lap_diff(cw, t) == 0 && phase_of(cw) == kReading && watch.stuck(cw) &&
        claimer_gone(holder_of(cw))) {
      free_lane(l, claim);
      return true;
    }
    if (lap_diff(cw, t) != 0) {  // the cell was recovered (its consumer died): drop the rest
      free_lane(l, claim);
      return true;
    }
    if ((block && deadline.expired()) || stopped(waiter)) {
      // Give up: the consumer (if any) drops the partial message.
      s.aborted.store(1, std::memory_order_seq_cst);
      notify_lane(s);
      return false;
    }
    waiter.wait([&] { return s.read.load(std::memory_order_seq_cst) != r; }, s.seq, s.sleeping,
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
  if (ref.index < short_lanes_) return false;  // only large lanes stream (cannot happen)
  RingStream& s = stream(ref.index);
  thread_local std::unique_ptr<std::byte[]> buffer;
  thread_local std::size_t buffer_size = 0;
  if (buffer_size < n) {
    buffer.reset(new std::byte[n]);
    buffer_size = n;
  }
  std::uint64_t r = 0;
  Waiter waiter;
  StuckWatch watch;
  const std::uint32_t owner = claim_pid(ref.claim);
  while (r < n) {
    std::uint64_t w = s.written.load(std::memory_order_acquire);
    if (w > r) {
      std::uint64_t chunk = w - r;
      std::uint64_t off = r % lane_bytes;
      std::uint64_t first = std::min<std::uint64_t>(chunk, lane_bytes - off);
      std::memcpy(buffer.get() + r, data + off, first);
      if (chunk > first) std::memcpy(buffer.get() + r + first, data, chunk - first);
      r = w;
      s.read.store(r, std::memory_order_seq_cst);
      notify_lane(s);
      waiter.reset();
      if (test_hook_mid_stream_get && r < n) test_hook_mid_stream_get();
      continue;
    }
    if (s.aborted.load(std::memory_order_acquire) != 0) return false;
    if (watch.stuck(w) && claimer_gone(owner)) return false;  // producer died mid-message
    waiter.wait(
        [&] {
          return s.written.load(std::memory_order_seq_cst) != w || s.aborted.load(std::memory_order_relaxed) != 0;
        },
        s.seq, s.sleeping, Deadline::never());
  }
  sink(std::span<const std::byte>(buffer.get(), n));
  return true;
}

// ---- Growth: blocks of spilled messages (see "Growth" at the top).

bool Ring::take_chunks(std::uint32_t count, std::uint32_t& first) {
  auto* bits = header_->chunk_bits;
  auto bit = [](std::uint32_t i) { return std::uint64_t{1} << (i % 64); };
  if (count == 1) {
    for (std::uint32_t w = 0; w < kMaxChunks / 64; ++w) {
      std::uint64_t x = bits[w].load(std::memory_order_acquire);
      while (x != ~std::uint64_t{0}) {
        const auto b = static_cast<std::uint32_t>(std::countr_one(x));
        if (bits[w].compare_exchange_weak(x, x | (std::uint64_t{1} << b), std::memory_order_acq_rel)) {
          first = w * 64 + b;
          header_->chunks_used.fetch_add(1, std::memory_order_relaxed);
          return true;
        }
      }
    }
    return false;
  }
  // A run: set its bits one by one; on a taken one, undo and start after it.
  for (std::uint32_t start = 0; start + count <= kMaxChunks;) {
    std::uint32_t i = start;
    for (; i < start + count; ++i)
      if (bits[i / 64].fetch_or(bit(i), std::memory_order_acq_rel) & bit(i)) break;
    if (i == start + count) {
      first = start;
      header_->chunks_used.fetch_add(count, std::memory_order_relaxed);
      return true;
    }
    for (std::uint32_t j = start; j < i; ++j) bits[j / 64].fetch_and(~bit(j), std::memory_order_acq_rel);
    start = i + 1;
  }
  return false;
}

void Ring::free_chunks(std::uint32_t chunk, std::uint32_t chunks) {
  // Nobody references these chunks any more: give their memory back (the
  // mappings stay valid; the pages read as zero until written again).
  (void)::fallocate(growth_->fd.get(), FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                    static_cast<off_t>(growth_->chunk_off + std::uint64_t{chunk} * kChunkBytes),
                    static_cast<off_t>(std::uint64_t{chunks} * kChunkBytes));
  header_->chunks_used.fetch_sub(chunks, std::memory_order_relaxed);
  for (std::uint32_t i = chunk; i < chunk + chunks; ++i)
    header_->chunk_bits[i / 64].fetch_and(~(std::uint64_t{1} << (i % 64)), std::memory_order_acq_rel);
}

void Ring::unpin_chunk(std::uint32_t chunk, std::uint32_t chunks) {
  const std::uint64_t old = growth_->ctl[chunk].fetch_sub(1, std::memory_order_acq_rel);
  if (ctl_count(old) != 1) return;
  if (old & kSealed) {
    free_chunks(chunk, chunks);
    return;
  }
  // The open chunk is drained: close it (as a producer opening the next one
  // would) so that its memory goes back once the queue drains. Only past
  // kCloseDrainedAt bytes, so that a queue spilling one item at a time does
  // not pay for a chunk (and a punch) per item.
  auto& open = header_->open_block;
  std::uint64_t v = open.load(std::memory_order_acquire);
  if (v != kNoOpen && open_chunk(v) == chunk && open_gen(v) == ctl_gen(old) && open_off(v) >= kCloseDrainedAt &&
      open.compare_exchange_strong(v, kNoOpen, std::memory_order_acq_rel))
    seal_chunk(chunk, ctl_gen(old));
}

void Ring::seal_chunk(std::uint32_t chunk, std::uint32_t gen) {
  auto& ctl = growth_->ctl[chunk];
  std::uint64_t x = ctl.load(std::memory_order_acquire);
  while (ctl_gen(x) == gen && !(x & kSealed)) {
    if (ctl.compare_exchange_weak(x, x | kSealed, std::memory_order_acq_rel)) {
      if (ctl_count(x) == 0) free_chunks(chunk, 1);  // every block already read
      return;
    }
  }
}

bool Ring::alloc_block(std::size_t bytes, Block& out) {
  RingHeader& h = *header_;
  auto* ctl = growth_->ctl;
  const std::uint64_t need = round_up(bytes, 64);
  if (need > kChunkBytes) {
    // Larger than a chunk: a run of its own, sealed from the start.
    const std::uint32_t k = chunks_for(bytes);
    std::uint32_t first = 0;
    if (!take_chunks(k, first)) return false;
    const std::uint32_t gen = (ctl_gen(ctl[first].load(std::memory_order_relaxed)) + 1) & 0xfffffu;
    ctl[first].store(make_ctl(gen, true, 1), std::memory_order_release);
    out = Block{first, gen, k, 0};
    return true;
  }
  for (;;) {
    std::uint64_t v = h.open_block.load(std::memory_order_acquire);
    if (v != kNoOpen && open_off(v) + need <= kChunkBytes) {
      // Pin the open chunk, then move its offset past our block.
      const std::uint32_t c = open_chunk(v);
      const std::uint32_t g = open_gen(v);
      std::uint64_t x = ctl[c].load(std::memory_order_acquire);
      bool pinned = false;
      while (!pinned && ctl_gen(x) == g && !(x & kSealed))
        pinned = ctl[c].compare_exchange_weak(x, x + 1, std::memory_order_acq_rel);
      if (!pinned) continue;  // sealed meanwhile: the open word has moved on
      if (h.open_block.compare_exchange_strong(v, v + need, std::memory_order_acq_rel)) {
        out = Block{c, g, 1, open_off(v)};
        return true;
      }
      unpin_chunk(c, 1);
      continue;
    }
    // No open chunk, or ours does not fit in it: open a new one.
    std::uint32_t c2 = 0;
    if (!take_chunks(1, c2)) return false;
    const std::uint32_t g2 = (ctl_gen(ctl[c2].load(std::memory_order_relaxed)) + 1) & 0xfffffu;
    ctl[c2].store(make_ctl(g2, false, 1), std::memory_order_seq_cst);
    if (h.open_block.compare_exchange_strong(v, make_open(g2, c2, need), std::memory_order_acq_rel)) {
      if (v != kNoOpen) seal_chunk(open_chunk(v), open_gen(v));
      out = Block{c2, g2, 1, 0};
      return true;
    }
    // Another producer opened one first: ours was never used.
    ctl[c2].store(make_ctl(g2, true, 0), std::memory_order_release);
    header_->chunks_used.fetch_sub(1, std::memory_order_relaxed);
    header_->chunk_bits[c2 / 64].fetch_and(~(std::uint64_t{1} << (c2 % 64)), std::memory_order_acq_rel);
  }
}

bool Ring::put_block(const Block& b, std::span<const std::byte> message, const Deadline& deadline, bool block,
                     const StopCheck* stop) {
  if (b.chunks == 1) {
    std::memcpy(chunk_ptr(b.chunk) + b.offset, message.data(), message.size());
  } else {
    const std::size_t len = std::size_t{b.chunks} * kChunkBytes;
    RunMapping run(growth_->map(growth_->chunk_off + std::uint64_t{b.chunk} * kChunkBytes, len), len);
    std::memcpy(run.data(), message.data(), message.size());
  }
  const BlockRef ref{b.chunk, b.gen, b.offset, message.size()};
  const bool linked = put_cell(
      [&](RingCell& c, std::uint64_t) {
        c.kind = kKindBlock;
        c.len = 0;
        std::memcpy(c.data, &ref, sizeof ref);
      },
      deadline, block, stop);
  if (!linked) unpin_chunk(b.chunk, b.chunks);
  return linked;
}

void Ring::read_block(RingCell& cell, ByteSink sink) {
  BlockRef ref;
  std::memcpy(&ref, cell.data, sizeof ref);
  const std::uint32_t k = chunks_for(ref.size);
  struct Unpin {
    Ring* ring;
    std::uint32_t chunk, chunks;
    ~Unpin() { ring->unpin_chunk(chunk, chunks); }
  } unpin{this, ref.chunk, k};
  if (k == 1) {
    sink(std::span<const std::byte>(chunk_ptr(ref.chunk) + ref.offset, ref.size));
    return;
  }
  const std::size_t len = std::size_t{k} * kChunkBytes;
  RunMapping run(growth_->map(growth_->chunk_off + std::uint64_t{ref.chunk} * kChunkBytes, len), len);
  sink(std::span<const std::byte>(run.data(), ref.size));
}

std::size_t Ring::spilled_bytes() const noexcept {
  return std::size_t{header_->chunks_used.load(std::memory_order_acquire)} * kChunkBytes;
}

int Ring::growth_fd() const noexcept { return growth_ ? growth_->fd.get() : -1; }

// ---- Byte budget.

bool Ring::reserve_bytes(std::size_t n, const Deadline& deadline, bool block) {
  RingHeader& h = *header_;
  Waiter waiter;
  for (;;) {
    std::uint64_t cur = h.queued_bytes.load(std::memory_order_acquire);
    if (cur == 0 || cur + n <= max_bytes_) {  // an empty queue takes any message
      if (h.queued_bytes.compare_exchange_weak(cur, cur + n, std::memory_order_acq_rel)) return true;
      continue;
    }
    if (!block || deadline.expired()) return false;
    waiter.wait([&] { return h.queued_bytes.load(std::memory_order_seq_cst) != cur; }, h.bytes_seq, h.bytes_waiters,
                deadline);
  }
}

void Ring::release_bytes(std::size_t n) noexcept {
  auto& q = header_->queued_bytes;
  std::uint64_t cur = q.load(std::memory_order_relaxed);
  // Saturating: a message counted twice on release must not wrap the count.
  while (!q.compare_exchange_weak(cur, cur > n ? cur - n : 0, std::memory_order_seq_cst)) {
  }
  notify(header_->bytes_seq, header_->bytes_waiters);
}

std::size_t Ring::queued_bytes() const noexcept {
  return static_cast<std::size_t>(header_->queued_bytes.load(std::memory_order_acquire));
}

// ---- Readiness for event loops.

bool Ring::arm_reader() noexcept {
  RingHeader& h = *header_;
  h.reader_armed.store(1, std::memory_order_seq_cst);
  // Dekker with reader_signal_due(): a put published after this store sees
  // the flag; one published before it is seen here.
  if (h.tail.load(std::memory_order_seq_cst) > h.head.load(std::memory_order_seq_cst))
    return h.reader_armed.exchange(0, std::memory_order_seq_cst) != 0;
  return false;
}

bool Ring::reader_armed() const noexcept { return header_->reader_armed.load(std::memory_order_acquire) != 0; }


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
  if (options_.grow) {
    // Messages before `pos` in its lap (see "Grow"): a lap that reached the
    // segments used base cells up to its skip, or all of them.
    const std::uint64_t skip = header_->skip.load(std::memory_order_acquire);
    auto before = [&](std::uint64_t pos) {
      const std::uint64_t idx = pos & mask_;
      if (idx < base_cells_) return idx;
      const bool skipped = skip != 0 && ((skip - 1) >> shift_) == (pos >> shift_);
      return (skipped ? ((skip - 1) & mask_) + 1 : base_cells_) + (idx - base_cells_);
    };
    // A lap that ends with head in it ended at the base cells' end (else
    // head was moved past it first; a snapshot between two jumps may count
    // too many, bounded below).
    const std::uint64_t laps = (tail >> shift_) - (head >> shift_);
    const std::uint64_t done = laps ? std::min(before(head), std::uint64_t{base_cells_}) : before(head);
    const std::uint64_t ahead = laps * base_cells_ + before(tail);
    if (ahead <= done) return 0;
    const std::uint64_t n = ahead - done;
    return static_cast<std::size_t>(std::min<std::uint64_t>(n, capacity_));
  }
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
