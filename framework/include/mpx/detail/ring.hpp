// mpx/detail/ring.hpp: the byte-level message ring under Queue, SimpleQueue
// and JoinableQueue.
//
// Contract
// - A Ring lives in one shared mapping (MAP_SHARED) made by create(); every
//   process forked after that sees the same ring. Any thread of any of those
//   processes may call put/get concurrently (MPMC). Messages are byte strings
//   of any length; each put is delivered to at most one get, in claim order:
//   exactly one unless a process dies holding it (Faults, below).
// - put blocks while the ring is full (all `capacity` cells taken) until the
//   deadline; get blocks while it is empty. Both return false on timeout and
//   never throw for a full/empty ring. Errors of the OS (mmap) throw
//   mpx::OSError, bad options QueueError; a consumer callback's exception propagates after the
//   cell is released (the message counts as consumed).
// - Small messages (<= kInlineBytes) travel inside a 64-byte cell: one cache
//   line, a claim CAS and a publish store on each side, no syscall unless the
//   other side sleeps. Larger messages go through a "lane" (a byte buffer
//   referenced by the cell): written before the cell is published when they
//   fit, streamed through a large lane while the consumer reads when they do
//   not (spill rings: a block of the growth file when no lane is free or the
//   message is larger than a lane; see Growth).
// - Lanes come in classes, so that a message costs memory in proportion to
//   its size: up to three classes of short lanes (`tiny_lanes` of
//   tiny_lane_bytes, `mid_lanes` of mid_lane_bytes, `small_lanes` of
//   small_lane_bytes; a class of 0 lanes does not exist; classes are ordered
//   by their bytes, whatever their names), then `lanes` large lanes of
//   lane_bytes. A message takes a lane of the smallest class it fits
//   (the lowest free one), falls back to the next larger class when its
//   class has no free lane, and to a large lane after the last one. A lane
//   costs its bytes (rounded up to 64) plus a 16-byte claim word; a large
//   lane also has a 256-byte stream block. A 100-byte message thus takes
//   64 + 16 + 256 bytes with a 256-byte class (Queue's default), against
//   64 + 16 + 4096 with only the 4 KiB class.
// - Faults: every claim records who claims in the cell's state word (or the
//   lane's claim word) with the same CAS that claims it: an id that the
//   ring's claimer table maps to the process' pid and its exact identity
//   (detail::current_process_ident: the pidfs inode of the task, or its start
//   time where there is no pidfs), registered once per process and ring on
//   its first put/get. A process killed between claim and release is
//   detected by whoever waits on it after kLivenessTick (detail::owner_gone:
//   gone, a zombie, or its pid now carried by another process), and the cell
//   is recovered: a half-written message is skipped, a half-read one is
//   dropped. At most the one message in the hands of the dead process is
//   lost. A reused pid is not taken for the dead claimer, except (a) without
//   pidfs (Linux < 6.9), within the same 10 ms clock tick; (b) when the
//   table's 1024 entries are all held by live processes (more than 1024
//   processes putting/getting at once): the later ones claim by bare pid
//   (liveness by pid, as kill(pid,0)); (c) a dead claim left unnoticed while
//   2^27 more processes register on the ring (its id comes round again).
// - Memory: the mapping is reserved, not committed (SharedMapping::reserved:
//   no commit charge until a page is touched), and construction touches only
//   the header page (the claimer table after it, 16 KiB, fills a page per
//   256 processes that put/get). A queue that stays shallow reuses its first cells (it
//   starts a new lap early when it finds itself empty, see ring.cpp) and the
//   lowest lanes of each class, so its resident memory follows its depth, not its traffic.
//   A grow ring (below) ends a lap at its `capacity` base cells whenever the
//   next lap's first cell is free, and leaves them for its growth segments
//   only when the next base cell still holds a message (the base cells are
//   full) after a blocking put gave the consumers up to 10 ms to take it (a
//   non-blocking put does not wait); once in the segments, it comes back
//   when it finds itself empty.
//   So a backlog under `capacity` stays in the base cells, and one that
//   went past it walks on through segments (64 bytes per item carried)
//   until the ring empties once.
// - Growth (RingOptions::spill, grow; Queue sets them, Pipe does not): a
//   second memfd, sparse and mapped piece by piece on demand in each process,
//   holds what does not fit. spill: a message over 48 bytes that finds no
//   free lane (or is larger than a lane) is copied into a "block" of a 64 MiB
//   chunk instead of waiting; a chunk is punched out of the file (its memory
//   returned) once every block in it was read. grow: `capacity` cells are
//   only the first segment; more segments of 2^18 cells are mapped as the
//   backlog deepens, up to 2^30 cells. A process killed holding a block (a
//   producer between allocating and publishing it, a consumer reading it)
//   keeps that block's chunk from being returned until the ring is gone.
// - Byte budget (RingOptions::max_bytes, 0 = none): put waits while the
//   bytes of the messages queued plus its own would exceed it (a message
//   larger than the budget still goes through an empty queue). A process
//   killed inside put or get leaves that message's bytes counted.
// - Readiness for event loops: reader_signal_due() tells a producer, after a
//   put, that a reader armed a descriptor (arm_reader) and must be signalled;
//   the ring holds no descriptor itself (Queue: an eventfd; Pipe: its socket).
//
// Layout and memory ordering are documented in ring.cpp.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

#include "mpx/detail/deadline.hpp"
#include "mpx/detail/identity.hpp"
#include "mpx/detail/shared_mapping.hpp"
#include "mpx/detail/unique_fd.hpp"

namespace mpx::detail {

struct RingHeader;
struct RingCell;
struct RingLane;
struct RingStream;
struct RingClaimer;

// True unless `pid` certainly no longer runs (no such process, or a zombie).
// By pid only: a reused pid looks alive (the ring's claims are exact, above).
bool process_alive(pid_t pid) noexcept;

struct RingOptions {
  std::size_t capacity = 1u << 16;         // cells = messages in flight
  // Lane classes (see the contract): a message of 49+ bytes takes a lane of
  // the smallest class it fits, else of a larger class, else a large lane.
  std::size_t small_lanes = 1024;          // messages of up to small_lane_bytes in flight
  std::size_t small_lane_bytes = 4096;
  std::size_t lanes = 64;                  // larger messages in flight (smaller ones too when their classes run out)
  std::size_t lane_bytes = (1u << 20) + 4096;  // a 1 MiB payload and its envelope fit; larger ones stream
  bool spill = false;      // no free lane (or larger than a lane): a block of the growth file instead of waiting
  bool grow = false;       // `capacity` cells first, then segments of the growth file, up to 2^30
  std::size_t max_bytes = 0;  // byte budget of the messages queued (0: none)
  // Two more classes for short messages; none by default here (Queue sets them).
  std::size_t tiny_lanes = 0;
  std::size_t tiny_lane_bytes = 256;
  std::size_t mid_lanes = 0;
  std::size_t mid_lane_bytes = 1024;

  template <class Archive>
  void serialize(Archive& ar) {
    ar(capacity, small_lanes, small_lane_bytes, lanes, lane_bytes, spill, grow, max_bytes, tiny_lanes,
       tiny_lane_bytes, mid_lanes, mid_lane_bytes);
  }
};

// A callable reference that does not allocate: the consumer hands the message
// bytes to it while the cell is still claimed.
class ByteSink {
 public:
  template <class F>
  ByteSink(F& f) : obj_(&f), call_([](void* o, std::span<const std::byte> b) { (*static_cast<F*>(o))(b); }) {}
  void operator()(std::span<const std::byte> b) const { call_(obj_, b); }

 private:
  void* obj_;
  void (*call_)(void*, std::span<const std::byte>);
};

// A callable reference that a blocked put consults about every 20 ms (once
// it has spun out): true makes the put give up as if its deadline passed.
// Pipe ends use it to notice a peer that closed while they wait.
class StopCheck {
 public:
  template <class F>
  StopCheck(F& f) : obj_(&f), call_([](void* o) { return static_cast<bool>((*static_cast<F*>(o))()); }) {}
  bool operator()() const { return call_(obj_); }

 private:
  void* obj_;
  bool (*call_)(void*);
};

class Ring {
 public:
  static constexpr std::size_t kInlineBytes = 48;

  [[nodiscard]] static Ring create(const RingOptions& options);
  // The ring another process made with create(options), from its base file
  // (base_fd(); duplicated here, the caller keeps its descriptor) and its
  // growth file (growth_fd(); empty when the options have neither spill nor
  // grow): how a ring reaches a process that was not forked from its creator
  // (a forkserver or spawn child). Throws QueueError when the files do not
  // hold such a ring, OSError when they cannot be mapped.
  [[nodiscard]] static Ring attach(const RingOptions& options, int base_fd, UniqueFd growth_fd);

  Ring();
  ~Ring();
  Ring(Ring&&) noexcept;
  Ring& operator=(Ring&&) noexcept;
  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;

  // Blocks until the message is in the ring (a streamed one: until its last
  // byte is in the lane), or the deadline passes or `stop` says so (false;
  // nothing delivered: a stream already begun is marked aborted and every
  // consumer drops it whole). block=false: one attempt, as put_nowait.
  [[nodiscard]] bool put(std::span<const std::byte> message, const Deadline& deadline, bool block = true,
                         const StopCheck* stop = nullptr);
  // Hands the next message to `sink` and returns true, or false on timeout.
  [[nodiscard]] bool get(ByteSink sink, const Deadline& deadline, bool block = true);

  // Blocks until size() > 0 or the deadline; true when not empty. Does not
  // consume (another consumer may take the message first).
  [[nodiscard]] bool wait_nonempty(const Deadline& deadline);

  // Messages claimed by producers and not yet claimed by consumers (exact when
  // no put/get is in progress; otherwise a snapshot between the two).
  [[nodiscard]] std::size_t size() const noexcept;
  [[nodiscard]] std::size_t capacity() const noexcept { return capacity_; }
  // Bytes of the growth file that hold spilled messages now (whole chunks).
  [[nodiscard]] std::size_t spilled_bytes() const noexcept;
  // Bytes of messages queued, counted only with a byte budget (else 0).
  [[nodiscard]] std::size_t queued_bytes() const noexcept;
  // The growth file (spill/grow rings), -1 otherwise: a process that was not
  // forked from the creator needs it as well as the base mapping's fd.
  [[nodiscard]] int growth_fd() const noexcept;
  // The base file (header, cells, lanes) and the options it was made with.
  [[nodiscard]] int base_fd() const noexcept { return mapping_.fd(); }
  [[nodiscard]] const RingOptions& options() const noexcept { return options_; }

  // Readiness for event loops. arm_reader(): a reader is about to sleep on
  // its descriptor; the next put must signal it. Returns true when the ring
  // is not empty already: the caller signals its own descriptor. Call it
  // after draining the descriptor. reader_armed(): armed and not signalled yet.
  [[nodiscard]] bool arm_reader() noexcept;
  [[nodiscard]] bool reader_armed() const noexcept;
  // After a put: true (once) when a reader armed: the caller signals it. A
  // load of a word the put already had in cache when nobody armed.
  [[nodiscard]] bool reader_signal_due() noexcept {
    return armed_->load(std::memory_order_seq_cst) != 0 && armed_->exchange(0, std::memory_order_seq_cst) != 0;
  }

  // JoinableQueue's shared count of unfinished tasks (lives in the header).
  void add_unfinished() noexcept;
  // Returns false (and changes nothing) when the count is already zero.
  [[nodiscard]] bool task_done() noexcept;
  [[nodiscard]] bool wait_all_done(const Deadline& deadline);
  [[nodiscard]] std::uint64_t unfinished() const noexcept;

  explicit operator bool() const { return static_cast<bool>(mapping_); }

  // Test hooks: called in the claiming process between claim and
  // publish/release (never set in production code). A test kills the process
  // from inside the hook to simulate SIGKILL in the middle of put/get.
  static inline void (*test_hook_after_claim_put)() = nullptr;
  static inline void (*test_hook_after_claim_get)() = nullptr;
  static inline void (*test_hook_mid_stream_put)() = nullptr;
  static inline void (*test_hook_mid_stream_get)() = nullptr;
  // Between claiming a cell as a lap start ("jump", ring.cpp) and moving the indexes.
  static inline void (*test_hook_after_claim_jump)() = nullptr;

 private:
  enum class Claim { claimed, full, retry };

  // This process' claimer word on this ring (ring.cpp, "Claimers"), made on
  // its first claim and cached with the pid: a forked child makes its own.
  struct ClaimerCache {
    std::atomic<std::uint64_t> word{0};  // pid << 32 | claimer word
    ClaimerCache() = default;
    ClaimerCache(ClaimerCache&& o) noexcept : word(o.word.load(std::memory_order_relaxed)) {}
    ClaimerCache& operator=(ClaimerCache&& o) noexcept {
      word.store(o.word.load(std::memory_order_relaxed), std::memory_order_relaxed);
      return *this;
    }
  };
  std::uint32_t claimer();
  std::uint32_t register_claimer();
  // True when the claim of `who` (a claimer word) belongs to a process that has ended.
  bool claimer_gone(std::uint32_t who) const noexcept;

  // create() and attach(): sizes and offsets from the options, pointers into the mapping.
  struct Layout;
  struct Growth;
  Layout lay_out(const RingOptions& options);
  void place(const Layout& layout);
  std::unique_ptr<Growth> make_growth(UniqueFd fd, const Layout& layout) const;

  template <class Fill>
  bool put_cell(Fill&& fill, const Deadline& deadline, bool block, const StopCheck* stop);
  bool put_large(std::span<const std::byte> message, const Deadline& deadline, bool block, const StopCheck* stop);
  bool put_lane(int idx, std::span<const std::byte> message, const Deadline& deadline, bool block,
                const StopCheck* stop);
  // Growth file (ring.cpp, "Growth").
  struct Block;
  bool alloc_block(std::size_t bytes, Block& out);
  bool put_block(const Block& b, std::span<const std::byte> message, const Deadline& deadline, bool block,
                 const StopCheck* stop);
  void read_block(RingCell& cell, ByteSink sink);
  void unpin_chunk(std::uint32_t chunk, std::uint32_t chunks);
  void seal_chunk(std::uint32_t chunk, std::uint32_t gen);
  void free_chunks(std::uint32_t chunk, std::uint32_t chunks);
  bool take_chunks(std::uint32_t count, std::uint32_t& first);
  std::byte* chunk_ptr(std::uint32_t chunk) const;
  RingCell& overflow_cell(std::uint64_t idx) const;
  bool reserve_bytes(std::size_t n, const Deadline& deadline, bool block);
  void release_bytes(std::size_t n) noexcept;
  // Reads the lane message referenced by a claimed cell; false if abandoned.
  bool read_lane(RingCell& cell, std::uint64_t pos, ByteSink sink);
  int acquire_lane(std::size_t bytes, const Deadline& deadline, bool block, const StopCheck* stop);
  std::size_t lane_size(std::size_t i) const;
  bool lane_orphaned(RingLane& lane, std::uint64_t claim);
  void free_lane(RingLane& lane, std::uint64_t claim);
  void release_cell(RingCell& cell, std::uint64_t pos);
  void notify_consumers();
  void notify_producers();
  void notify_lane(RingStream& stream);
  void notify_lane_free();
  RingCell& cell_at(std::uint64_t pos) const;
  std::uint32_t turn_of(std::uint64_t pos) const;
  // The position after `pos`, whose cell is in state `w` (a jump cell: the
  // start of the next lap).
  std::uint64_t next_pos(std::uint64_t pos, std::uint64_t w) const;
  // Grow rings: kDivertBit when the claim of `pos` must change where its lap
  // goes on (ring.cpp, "Grow"), else 0. note_skip records a skip for size().
  std::uint32_t divert_at(std::uint64_t pos) const;
  void note_skip(std::uint64_t pos, std::uint64_t w);
  // True when claiming base cell `pos` with `divert` takes the lap into the
  // growth segments; wait_before_growing gives consumers kGrowAfter (or
  // until the put's deadline, if sooner) to free the next base cell first and
  // returns the divert bit to claim with.
  bool leaves_base(std::uint64_t pos, std::uint32_t divert) const;
  std::uint32_t wait_before_growing(std::uint64_t pos, std::uint32_t divert, const Deadline& deadline) const;
  void lower_lane_hint(std::size_t idx);
  RingLane& lane(std::size_t i) const;
  RingStream& stream(std::size_t i) const;  // of large lane i
  std::byte* lane_data(std::size_t i) const;

  RingOptions options_;
  SharedMapping mapping_;
  RingHeader* header_ = nullptr;
  RingClaimer* claimers_ = nullptr;
  ClaimerCache claimer_;
  RingCell* cells_ = nullptr;
  RingLane* lanes_ = nullptr;
  RingStream* streams_ = nullptr;
  std::byte* lane_data_ = nullptr;
  std::size_t capacity_ = 0;
  std::size_t base_cells_ = 0;  // cells in the base mapping; the rest (grow) in the growth file
  bool spill_ = false;
  std::size_t max_bytes_ = 0;
  std::unique_ptr<Growth> growth_;  // this process' view of the growth file
  std::atomic<std::uint32_t>* armed_ = nullptr;  // the header's reader_armed word
  unsigned shift_ = 0;      // a position is lap << shift_ | cell index
  std::uint64_t mask_ = 0;  // (1 << shift_) - 1
  // The classes of short lanes that have lanes, in ascending size; their
  // lanes come first (class by class), then the large ones.
  static constexpr std::size_t kLaneClasses = 3;
  struct LaneClass {
    std::size_t first = 0;     // index of its first lane
    std::size_t count = 0;
    std::size_t bytes = 0;
    std::size_t stride = 0;    // bytes rounded up to 64
    std::size_t data_off = 0;  // of its first lane's data, from lane_data_
  };
  LaneClass classes_[kLaneClasses];
  std::size_t class_count_ = 0;  // classes in use
  std::size_t short_lanes_ = 0;  // lanes of all classes: the index of the first large lane
  std::size_t lane_count_ = 0;
  std::size_t large_off_ = 0;    // of the first large lane's data, from lane_data_
  std::size_t lane_bytes_ = 0;
  std::size_t lane_stride_ = 0;
};

}  // namespace mpx::detail
