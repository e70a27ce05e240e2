// The host mailbox log (see mpx/actors/detail/mailbox.hpp for the contract).
//
// Layout of the segment:
//   MailboxHeader          bounds, positions, wake-up words, host state
//   reply slot headers     kReplySlots x 64 bytes (one page: a new mailbox commits no more)
//   reply slot payloads    kReplySlots x kReplySlotBytes (touched only when used)
//   data[data_bytes]       records, each 64-byte aligned:
//                          RecordHeader (32 bytes) + payload + padding
// Positions are byte offsets that only grow; a record at position p lives at
// data[p % data_bytes] and never wraps: a producer that would cross the end
// first fills the tail with a SKIP record. Invariant:
//   free_pos <= read_pos <= write_pos <= free_pos + data_bytes
// [free_pos, read_pos) are records taken and not all completed (or skipped),
// [read_pos, write_pos) records not taken yet. Only producers holding the
// lock move write_pos; only the consumer process moves read_pos and free_pos.
// The header at write_pos is always an empty one (phase 0): a producer
// clears the header after its record before it publishes its own (release),
// so the consumer finds the end of the log by the phase at read_pos and
// never reads write_pos, the producers' line, while it streams. For that a
// reservation keeps one alignment unit free past its record:
//   write_pos + kAlign <= free_pos + data_bytes
// Depth is counted on two lines instead of one both sides write per record:
//   depth = puts - dropped (producers', under the lock)
//           - taken_total - depth_offset (the consumer's)
// and producers keep cached copies of what they read from the consumer's
// side (the takes, free_pos), refreshed only when the copy says "full".
#include "mpx/actors/detail/mailbox.hpp"

#include <sched.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <new>
#include <thread>

#include "mpx/detail/futex.hpp"
#include "mpx/detail/identity.hpp"
#include "mpx/detail/ring.hpp"  // process_alive

namespace mpx::actors::detail {

namespace {

using mpx::detail::current_pid;
using mpx::detail::futex_wait;
using mpx::detail::futex_wake_all;
using mpx::detail::process_alive;

constexpr std::uint64_t kMagic = 0x7a6f626c69616d78ULL;  // "xmailboz": split depth, an empty header ends the log
constexpr std::uint64_t kAlign = 64;
constexpr auto kLivenessTick = std::chrono::milliseconds(20);
constexpr auto kStreamGap = std::chrono::milliseconds(1);  // take() spins only this soon after its last record
constexpr int kIdleYields = 64;                              // and at most this many times before it sleeps

enum Phase : std::uint32_t { kEmpty = 0, kWriting = 1, kReady = 2, kTaken = 3, kHandling = 4, kDone = 5, kSkip = 6 };
constexpr std::uint32_t kFlagRedelivered = 1;
constexpr std::uint32_t kFlagNoDrop = 2;   // requests and control records
constexpr std::uint32_t kFlagControl = 4;  // not counted in depth
constexpr std::int64_t kNoExitCode = std::int64_t{1} << 40;

constexpr std::uint64_t round_up(std::uint64_t n, std::uint64_t to) { return (n + to - 1) / to * to; }

}  // namespace

struct alignas(64) MailboxHeader {
  std::uint64_t magic;
  std::uint64_t data_bytes;
  std::uint64_t capacity;
  std::uint64_t in_flight_limit;
  std::uint32_t policy;
  std::atomic<std::uint32_t> retired;
  // The producers' line: written under their lock.
  alignas(64) std::atomic<std::uint32_t> lock;  // pid of the producer reserving, 0 when free
  std::atomic<std::uint32_t> lock_waiters;
  std::atomic<std::uint64_t> write_pos;
  std::atomic<std::uint64_t> puts;          // message and request records reserved, all time
  std::atomic<std::uint64_t> dropped;       // by drop_oldest
  std::atomic<std::int64_t> consumed_seen;  // taken_total + depth_offset as a producer last read them
  std::atomic<std::uint64_t> free_seen;     // free_pos as a producer last read it
  // The consumer's line: written at every take.
  alignas(64) std::atomic<std::uint64_t> read_pos;
  std::atomic<std::uint64_t> taken_total;   // message and request records taken, all incarnations
  std::atomic<std::int64_t> depth_offset;   // records no one will take (a dead writer's) and attach's recount
  // Moved by the completing threads.
  alignas(64) std::atomic<std::uint64_t> free_pos;
  alignas(64) std::atomic<std::uint32_t> not_empty_seq;
  std::atomic<std::uint32_t> consumer_sleeping;
  alignas(64) std::atomic<std::uint32_t> not_full_seq;
  std::atomic<std::uint32_t> producers_sleeping;
  alignas(64) std::atomic<std::uint32_t> consumer_pid;
  std::atomic<std::uint32_t> incarnation;
  std::atomic<std::uint32_t> host_state;
  std::atomic<std::int64_t> exit_code;
  std::atomic<std::uint32_t> owner_pid;  // created or adopted it (create_or_adopt)
};

struct RecordHeader {
  std::atomic<std::uint32_t> phase;
  std::uint32_t writer_pid;
  std::uint64_t pos;
  std::uint64_t total;
  std::uint32_t length;
  std::atomic<std::uint32_t> flags;
};
static_assert(sizeof(RecordHeader) == 32);
static_assert(std::atomic<std::int64_t>::is_always_lock_free && std::atomic<std::uint64_t>::is_always_lock_free);

// A reply slot's state word: (key << 2) | phase. Only the leasing process
// arms (idle/filled/dead writer's -> armed) and releases (armed -> idle); a
// filler claims writer_pid (0 -> its pid), then moves armed -> writing ->
// filled by CAS, so a reply for an older key (a released or re-leased
// slot) never lands, and a slot being written always names its writer.
struct alignas(64) Mailbox::ReplySlot {
  std::atomic<std::uint64_t> state;
  std::atomic<std::uint32_t> writer_pid;  // the filler; 0 from the lease until one claims it
  std::atomic<std::uint32_t> seq;         // futex word of a waiter
  std::atomic<std::uint32_t> waiting;     // waiters inside wait_reply_slot (theirs to count)
  std::uint32_t length;
  std::uint8_t kind;
};
static_assert(sizeof(Mailbox::ReplySlot) == 64);

namespace {
enum SlotPhase : std::uint64_t { kSlotIdle = 0, kSlotArmed = 1, kSlotWriting = 2, kSlotFilled = 3 };
constexpr std::uint64_t slot_state(std::uint64_t key, SlotPhase phase) { return (key << 2) | phase; }
constexpr std::uint64_t kSlotsOffset = round_up(sizeof(MailboxHeader), 4096);
constexpr std::uint64_t kSlotPayloadsOffset =
    kSlotsOffset + round_up(std::uint64_t{Mailbox::kReplySlots} * sizeof(Mailbox::ReplySlot), 4096);
constexpr std::uint64_t kDataOffset =
    kSlotPayloadsOffset + std::uint64_t{Mailbox::kReplySlots} * Mailbox::kReplySlotBytes;
}

Mailbox::Mailbox(SharedMemory shm) : shm_(std::move(shm)) {
  auto bytes = shm_.buf();
  header_ = reinterpret_cast<MailboxHeader*>(bytes.data());
  data_ = bytes.data() + kDataOffset;
  const std::uint64_t size = header_->data_bytes;
  data_mask_ = (size & (size - 1)) == 0 ? size - 1 : 0;
}

std::shared_ptr<Mailbox> Mailbox::create(const std::string& name, const MailboxOptions& options) {
  if (options.capacity == 0) throw ActorError("mpx actors: MailboxOptions::capacity must be at least 1");
  if (options.in_flight == 0) throw ActorError("mpx actors: MailboxOptions::in_flight must be at least 1");
  if (options.bytes < (64u << 10) || options.bytes > (std::size_t{1} << 40))
    throw ActorError("mpx actors: MailboxOptions::bytes must be in [64 KiB, 1 TiB]");
  const std::uint64_t data_bytes = round_up(options.bytes, 4096);
  SharedMemory shm(name, true, static_cast<std::int64_t>(kDataOffset + data_bytes));
  auto* header = new (shm.buf().data()) MailboxHeader{};
  header->data_bytes = data_bytes;
  header->capacity = options.capacity;
  header->in_flight_limit = options.in_flight;
  header->policy = static_cast<std::uint32_t>(options.policy);
  header->exit_code.store(kNoExitCode, std::memory_order_relaxed);
  header->owner_pid.store(static_cast<std::uint32_t>(current_pid()), std::memory_order_relaxed);
  // Published last: open() in another process waits for it (see there).
  std::atomic_ref<std::uint64_t>(header->magic).store(kMagic, std::memory_order_release);
  return std::shared_ptr<Mailbox>(new Mailbox(std::move(shm)));
}

std::shared_ptr<Mailbox> Mailbox::open(const std::string& name) {
  // The name exists from the creator's shm_open on, its size from ftruncate,
  // its header from the magic stored last: a sender that opens a mailbox
  // being created (a host starting while others already send to its name)
  // sees it empty or without its magic for microseconds. Retry that, briefly.
  const auto deadline = mpx::detail::Deadline::after(std::chrono::seconds(1));
  for (;;) {
    std::optional<SharedMemory> attached;
    try {
      attached.emplace(name, false);
    } catch (const FileNotFoundError&) {
      throw;
    } catch (const SharedMemoryError&) {
      // Size 0: created, not sized yet (SharedMemory refuses an empty
      // segment). Any other failure persists and is thrown at the deadline.
      if (deadline.expired()) throw;
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      continue;
    }
    SharedMemory& shm = *attached;
    const bool sized = shm.size() >= kDataOffset;
    const std::uint64_t magic =
        sized ? std::atomic_ref<std::uint64_t>(reinterpret_cast<MailboxHeader*>(shm.buf().data())->magic)
                    .load(std::memory_order_acquire)
              : 0;
    if (magic == kMagic) {
      auto* header = reinterpret_cast<MailboxHeader*>(shm.buf().data());
      if (shm.size() < kDataOffset + header->data_bytes)
        throw ActorError("mpx actors: segment '" + name + "' is not a mailbox");
      return std::shared_ptr<Mailbox>(new Mailbox(std::move(shm)));
    }
    if (magic != 0 || deadline.expired()) throw ActorError("mpx actors: segment '" + name + "' is not a mailbox");
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  }
}

std::shared_ptr<Mailbox> Mailbox::create_or_adopt(const std::string& name, const MailboxOptions& options,
                                                  bool& adopted) {
  adopted = false;
  for (int attempt = 0;; ++attempt) {
    try {
      return create(name, options);
    } catch (const FileExistsError&) {
      if (attempt > 0) throw;
    }
    std::shared_ptr<Mailbox> left;
    try {
      left = open(name);
    } catch (const FileNotFoundError&) {
      continue;  // unlinked in between: create it
    }
    auto& owner = left->header_->owner_pid;
    std::uint32_t was = owner.load(std::memory_order_acquire);
    if (was != 0 && process_alive(static_cast<pid_t>(was))) throw FileExistsError("mailbox '" + name + "' exists");
    if (left->retired()) {  // its host was shut down: nothing in it is owed to anyone
      left->unlink();
      continue;
    }
    // Two restarted owners may race for it: one CAS wins, the other clashes.
    if (!owner.compare_exchange_strong(was, static_cast<std::uint32_t>(current_pid()), std::memory_order_acq_rel))
      throw FileExistsError("mailbox '" + name + "' exists");
    adopted = true;
    return left;
  }
}

pid_t Mailbox::owner_pid() const noexcept {
  return static_cast<pid_t>(header_->owner_pid.load(std::memory_order_acquire));
}

RecordHeader& Mailbox::record_at(std::uint64_t pos) const {
  // A mask for a power-of-two log (the default): a division per record
  // access showed in the stream's profile.
  const std::uint64_t offset = data_mask_ ? (pos & data_mask_) : pos % header_->data_bytes;
  return *std::launder(reinterpret_cast<RecordHeader*>(data_ + offset));
}

// ---- the producers' robust lock

void Mailbox::lock_producers() {
  const auto me = static_cast<std::uint32_t>(current_pid());
  auto& word = header_->lock;
  for (int spin = 0;; ++spin) {
    std::uint32_t expected = 0;
    if (word.compare_exchange_weak(expected, me, std::memory_order_acquire)) return;
    if (spin < 64) {
      sched_yield();
      continue;
    }
    header_->lock_waiters.fetch_add(1, std::memory_order_seq_cst);
    const std::uint32_t holder = word.load(std::memory_order_seq_cst);
    if (holder != 0) {
      auto result = futex_wait(word, holder, Deadline::after(kLivenessTick));
      if (result == mpx::detail::FutexWaitResult::timed_out && word.load() == holder &&
          !process_alive(static_cast<pid_t>(holder))) {
        // The holder died inside its reservation: take the lock over. What
        // it left is consistent at every store (see put()): nothing, or a
        // reserved record that the consumer skips once it sees the pid gone.
        std::uint32_t dead = holder;
        if (word.compare_exchange_strong(dead, me, std::memory_order_acquire)) {
          // The dead holder's plain stores (its count of puts) are read by
          // read-modify-writes first, which see the latest values.
          header_->puts.fetch_add(0, std::memory_order_acq_rel);
          header_->write_pos.fetch_add(0, std::memory_order_acq_rel);
          header_->lock_waiters.fetch_sub(1, std::memory_order_relaxed);
          return;
        }
      }
    }
    header_->lock_waiters.fetch_sub(1, std::memory_order_relaxed);
  }
}

void Mailbox::unlock_producers() {
  header_->lock.store(0, std::memory_order_seq_cst);
  if (header_->lock_waiters.load(std::memory_order_seq_cst) != 0) futex_wake_all(header_->lock);
}

// ---- wake-ups

void Mailbox::notify_producers() {
  auto& h = *header_;
  if (h.producers_sleeping.load(std::memory_order_seq_cst) != 0 &&
      h.producers_sleeping.exchange(0, std::memory_order_seq_cst) != 0) {
    h.not_full_seq.fetch_add(1, std::memory_order_seq_cst);
    futex_wake_all(h.not_full_seq);
  }
}

void Mailbox::notify_consumer() {
  auto& h = *header_;
  if (h.consumer_sleeping.load(std::memory_order_seq_cst) != 0 &&
      h.consumer_sleeping.exchange(0, std::memory_order_seq_cst) != 0) {
    h.not_empty_seq.fetch_add(1, std::memory_order_seq_cst);
    futex_wake_all(h.not_empty_seq);
  }
}

void Mailbox::interrupt_consumer() {
  header_->not_empty_seq.fetch_add(1, std::memory_order_seq_cst);
  futex_wake_all(header_->not_empty_seq);
}

// Sleeps until a consumer frees something after `seq` was sampled (and the
// wait announced: see put()), a liveness tick, or the deadline.
void Mailbox::wait_producers(std::uint32_t seq, const Deadline& deadline) {
  auto& h = *header_;
  auto tick = Deadline::after(kLivenessTick);
  auto left = deadline.remaining();
  futex_wait(h.not_full_seq, seq, (left && *left < kLivenessTick) ? deadline : tick);
}

// ---- producers

bool Mailbox::drop_oldest_locked() {
  auto& h = *header_;
  const std::uint64_t end = h.write_pos.load(std::memory_order_acquire);
  for (std::uint64_t pos = h.read_pos.load(std::memory_order_acquire); pos < end;) {
    RecordHeader& r = record_at(pos);
    std::uint32_t phase = kReady;
    if ((r.flags.load(std::memory_order_relaxed) & kFlagNoDrop) == 0 && phase == r.phase.load(std::memory_order_acquire)) {
      // Counted first: a producer killed between the two leaves the depth
      // one low (soft), never one high (a phantom that could fill it).
      h.dropped.fetch_add(1, std::memory_order_seq_cst);
      if (r.phase.compare_exchange_strong(phase, kSkip, std::memory_order_acq_rel)) return true;
      h.dropped.fetch_sub(1, std::memory_order_seq_cst);
    }
    pos += r.total;
  }
  return false;
}

// Messages waiting, as a producer holding the lock counts them: from its
// cached copy of the consumer's counters, or (`fresh`) from the counters.
// The copy only lags, so it never shows room that is not there.
std::int64_t Mailbox::waiting_locked(bool fresh) {
  auto& h = *header_;
  if (fresh) {
    h.consumed_seen.store(static_cast<std::int64_t>(h.taken_total.load(std::memory_order_seq_cst)) +
                              h.depth_offset.load(std::memory_order_seq_cst),
                          std::memory_order_relaxed);
  }
  return static_cast<std::int64_t>(h.puts.load(std::memory_order_relaxed) -
                                   h.dropped.load(std::memory_order_relaxed)) -
         h.consumed_seen.load(std::memory_order_relaxed);
}

// Whether a record may end at `end` (its successor's empty header included),
// as a producer holding the lock sees it; rereads free_pos only when its
// copy says no.
bool Mailbox::fits_locked(std::uint64_t end) {
  auto& h = *header_;
  if (end + kAlign - h.free_seen.load(std::memory_order_relaxed) <= h.data_bytes) return true;
  const std::uint64_t f = h.free_pos.load(std::memory_order_seq_cst);  // after an announced wait (put)
  h.free_seen.store(f, std::memory_order_relaxed);
  return end + kAlign - f <= h.data_bytes;
}

bool Mailbox::put(std::span<const std::byte> head, std::span<const std::byte> body, const Deadline& deadline,
                  bool block, RecordClass record_class) {
  auto& h = *header_;
  const bool control = record_class == RecordClass::control;
  const std::uint32_t flags = control                                  ? (kFlagControl | kFlagNoDrop)
                              : record_class == RecordClass::request ? kFlagNoDrop
                                                                     : 0u;
  const std::uint64_t length = head.size() + body.size();
  const std::uint64_t total = round_up(sizeof(RecordHeader) + length, kAlign);
  if (total > h.data_bytes / 2)
    throw MessageTooLarge("mpx actors: a message of " + std::to_string(length) + " bytes does not fit mailbox '" +
                          name() + "' (at most " + std::to_string(max_message_bytes()) + " bytes)");
  const auto policy = static_cast<MailboxPolicy>(h.policy);
  const auto me = static_cast<std::uint32_t>(current_pid());
  std::uint64_t at = 0;
  std::optional<std::uint32_t> announced;  // not_full_seq when this producer announced a wait
  lock_producers();
  for (;;) {
    bool room = true;
    if (!control && waiting_locked(false) >= static_cast<std::int64_t>(h.capacity) &&
        waiting_locked(true) >= static_cast<std::int64_t>(h.capacity)) {
      if (policy == MailboxPolicy::fail) {
        unlock_producers();
        return false;
      }
      room = policy == MailboxPolicy::drop_oldest && drop_oldest_locked();
    }
    if (room) {
      // Acquire: after a takeover from a dead holder, its reservation's
      // fields and empty end header are ours to build on.
      const std::uint64_t w = h.write_pos.load(std::memory_order_acquire);
      const std::uint64_t offset = data_mask_ ? (w & data_mask_) : w % h.data_bytes;
      const bool wraps = offset + total > h.data_bytes;
      const std::uint64_t size = wraps ? h.data_bytes - offset : total;  // a SKIP pads the tail
      if (fits_locked(w + size)) {
        record_at(w + size).phase.store(kEmpty, std::memory_order_relaxed);  // the new end of the log
        RecordHeader& r = record_at(w);
        r.writer_pid = me;
        r.pos = w;
        r.total = size;
        r.length = wraps ? 0 : static_cast<std::uint32_t>(length);
        r.flags.store(wraps ? kFlagControl : flags, std::memory_order_relaxed);
        // A producer killed from here on leaves a reserved record that the
        // consumer skips once its pid is gone (take()); killed before the
        // count, it leaves the depth one low (soft: one message over
        // capacity) rather than one high (a phantom that could fill it).
        h.write_pos.store(w + size, std::memory_order_release);
        // Under the lock: a plain increment (a locked one waited for the
        // stores before it, the cold lines of the record among them).
        if (!wraps && !control) h.puts.store(h.puts.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
        if (wraps) {
          r.phase.store(kSkip, std::memory_order_seq_cst);
          notify_consumer();
          continue;
        }
        r.phase.store(kWriting, std::memory_order_release);
        // The next records' lines, last written a lap ago, are fetched for
        // writing now: a stream's put waited mostly on that miss. Only free
        // lines (below free_seen + data_bytes): not records still read.
        const std::uint64_t next = w + size;
        const std::uint64_t next_offset = data_mask_ ? (next & data_mask_) : next % h.data_bytes;
        const std::uint64_t free_end = h.free_seen.load(std::memory_order_relaxed) + h.data_bytes;
        for (std::uint64_t ahead = 2 * kAlign; ahead < 6 * kAlign && next + ahead + kAlign <= free_end; ahead += kAlign) {
          std::uint64_t offset = next_offset + ahead;
          if (offset >= h.data_bytes) offset -= h.data_bytes;
          __builtin_prefetch(data_ + offset, 1);
        }
        at = w;
        break;
      }
    }
    if (!block || deadline.expired()) {  // a full log blocks under every policy
      unlock_producers();
      return false;
    }
    if (!announced) {
      // Announce the wait, then look once more: a consumer that makes room
      // after this load sees the flag (its store, then its load; ours the
      // other way round) and wakes us.
      announced = h.not_full_seq.load(std::memory_order_seq_cst);
      h.producers_sleeping.store(1, std::memory_order_seq_cst);
      continue;
    }
    unlock_producers();
    wait_producers(*announced, deadline);
    announced.reset();
    lock_producers();
  }
  unlock_producers();
  RecordHeader& r = record_at(at);
  auto* payload = reinterpret_cast<std::byte*>(&r) + sizeof(RecordHeader);
  if (!head.empty()) std::memcpy(payload, head.data(), head.size());
  if (!body.empty()) std::memcpy(payload + head.size(), body.data(), body.size());
  r.phase.store(kReady, std::memory_order_seq_cst);
  notify_consumer();
  return true;
}

// ---- the consumer

std::optional<Mailbox::Taken> Mailbox::take(const Deadline& deadline, const std::atomic<bool>* wake) {
  auto& h = *header_;
  int idle = 0;
  for (;;) {
    // The end of the log is the empty header at write_pos (see the top):
    // the phase at read_pos says whether a record is there.
    const std::uint64_t r = h.read_pos.load(std::memory_order_relaxed);
    {
      RecordHeader& rec = record_at(r);
      std::uint32_t phase = rec.phase.load(std::memory_order_acquire);
      if (phase == kReady) {
        // Taken once read_pos passes it. Only drop_oldest moves a READY
        // record behind the consumer's back: there it is marked TAKEN first
        // (a CAS the dropping producer loses). Otherwise it stays READY below
        // read_pos, and the consumer does not write the record's line (the
        // next to write it is the actor's thread: HANDLING).
        const bool taken = static_cast<MailboxPolicy>(h.policy) != MailboxPolicy::drop_oldest ||
                           rec.phase.compare_exchange_strong(phase, kTaken, std::memory_order_acq_rel);
        if (taken) {
          bool room_made = false;
          if ((rec.flags.load(std::memory_order_relaxed) & kFlagControl) == 0) {
            h.taken_total.fetch_add(1, std::memory_order_seq_cst);
            // Producers blocked at `capacity` are woken once a slice of it
            // is free, not at every take: waking them per record made
            // producer and consumer trade a futex wake-up per message once
            // the bound was reached (sustained throughput fell to a third).
            room_made = h.producers_sleeping.load(std::memory_order_seq_cst) != 0 &&
                        static_cast<std::int64_t>(depth()) <= low_water();
          }
          h.read_pos.store(r + rec.total, std::memory_order_release);
          if (room_made) notify_producers();
          ++taken_count_;  // stamped when next idle: no clock read per record
          const auto* payload = reinterpret_cast<const std::byte*>(&rec) + sizeof(RecordHeader);
          return Taken{r, {payload, rec.length}, (rec.flags.load(std::memory_order_relaxed) & kFlagRedelivered) != 0};
        }
        continue;  // dropped meanwhile
      }
      if (phase == kSkip || phase == kDone) {
        h.read_pos.store(r + rec.total, std::memory_order_release);
        reclaim();
        continue;
      }
    }
    if (deadline.expired()) return std::nullopt;  // Deadline::passed(): no clock read
    const auto now = Deadline::Clock::now();
    if (skip_dead_writer(r, now)) continue;
    // A record due within microseconds (a stream, a request's next message)
    // is met by a few yields instead of a sleep and a wake-up. A consumer
    // that took nothing for a while sleeps at once: an idle host's gateway
    // returns here for its 10 ms sweep, and 64 yields each time cost a
    // tree of idle hosts thousands of context switches a second.
    if (taken_count_ != stamped_count_) {
      stamped_count_ = taken_count_;
      last_taken_ = now;
    }
    if (++idle < kIdleYields && now - last_taken_ < kStreamGap) {
      sched_yield();
      continue;
    }
    notify_producers();  // about to sleep: no producer may sleep on a mailbox with room
    const std::uint32_t seq = h.not_empty_seq.load(std::memory_order_seq_cst);
    h.consumer_sleeping.store(1, std::memory_order_seq_cst);
    if (const auto phase = record_at(r).phase.load(std::memory_order_seq_cst); phase != kEmpty && phase != kWriting)
      continue;
    // Checked after seq was sampled: a wake set later also bumps seq.
    if (wake && wake->load(std::memory_order_seq_cst)) return std::nullopt;
    auto tick = Deadline::after(kLivenessTick);
    auto left = deadline.remaining();
    auto result = futex_wait(h.not_empty_seq, seq, (left && *left < kLivenessTick) ? deadline : tick);
    if (result == mpx::detail::FutexWaitResult::woken && h.read_pos.load() == h.write_pos.load()) return std::nullopt;
  }
}

// Nothing is ready at `r`. A producer may be copying (WRITING) or have
// reserved the record and not published it yet (EMPTY below write_pos); if
// it died there, the record is skipped. Looked at once the consumer has
// waited at `r` a liveness tick, across take() calls (the gateway's are
// shorter than a tick).
bool Mailbox::skip_dead_writer(std::uint64_t r, Deadline::Clock::time_point now) {
  if (stuck_at_ != r) {
    stuck_at_ = r;
    stuck_since_ = now;
    return false;
  }
  if (now - stuck_since_ < kLivenessTick) return false;
  stuck_since_ = now;  // looked at again after another tick
  auto& h = *header_;
  RecordHeader& rec = record_at(r);
  std::uint32_t phase = rec.phase.load(std::memory_order_acquire);
  // An EMPTY header below write_pos is reserved: its fields are written
  // before write_pos moves past it (release).
  const bool reserved = phase == kWriting || (phase == kEmpty && h.write_pos.load(std::memory_order_acquire) != r);
  if (!reserved || process_alive(static_cast<pid_t>(rec.writer_pid))) return false;
  if (rec.phase.compare_exchange_strong(phase, kSkip, std::memory_order_acq_rel) &&
      (rec.flags.load(std::memory_order_relaxed) & kFlagControl) == 0)
    h.depth_offset.fetch_add(1, std::memory_order_seq_cst);
  return true;
}

std::int64_t Mailbox::low_water() const noexcept {
  const auto capacity = static_cast<std::int64_t>(header_->capacity);
  return capacity - std::max<std::int64_t>(1, capacity / 8);
}

void Mailbox::mark_handling(std::uint64_t pos) { record_at(pos).phase.store(kHandling, std::memory_order_release); }

void Mailbox::complete(std::uint64_t pos) {
  mark_done(pos);
  reclaim();
}

void Mailbox::mark_done(std::uint64_t pos) { record_at(pos).phase.store(kDone, std::memory_order_release); }

void Mailbox::reclaim_done() { reclaim(); }

void Mailbox::reclaim() {
  // A caller that finds the lock held leaves a request: the holder sweeps
  // once more after it lets go, so no completion is missed (a producer
  // waiting for bytes would otherwise wait for some later completion).
  reclaim_requested_.store(true, std::memory_order_seq_cst);
  while (reclaim_requested_.load(std::memory_order_seq_cst)) {
    std::unique_lock lock(reclaim_mutex_, std::try_to_lock);
    if (!lock.owns_lock()) return;  // the holder sees the request after its sweep
    reclaim_requested_.store(false, std::memory_order_seq_cst);
    auto& h = *header_;
    const std::uint64_t start = h.free_pos.load(std::memory_order_relaxed);
    std::uint64_t f = start;
    const std::uint64_t r = h.read_pos.load(std::memory_order_acquire);
    while (f < r) {
      RecordHeader& rec = record_at(f);
      const std::uint32_t phase = rec.phase.load(std::memory_order_acquire);
      if (phase != kDone && phase != kSkip) break;
      f += rec.total;
    }
    if (f != start) {
      h.free_pos.store(f, std::memory_order_seq_cst);  // then the flag's load in notify_producers()
      notify_producers();
    }
  }
}

Mailbox::Recovery Mailbox::attach_consumer() {
  auto& h = *header_;
  Recovery recovery;
  lock_producers();
  const std::uint64_t end = h.write_pos.load(std::memory_order_acquire);
  const std::uint64_t start = h.free_pos.load(std::memory_order_acquire);
  const std::uint64_t taken_below = h.read_pos.load(std::memory_order_acquire);  // the previous consumer's
  std::uint64_t waiting = 0;
  for (std::uint64_t pos = start; pos < end;) {
    RecordHeader& r = record_at(pos);
    const std::uint32_t phase = r.phase.load(std::memory_order_acquire);
    // Reserved, never published: we hold the lock, so its producer was a
    // holder that died (the lock is taken over only from a dead pid).
    if (phase == kEmpty) r.phase.store(kSkip, std::memory_order_release);
    // Taken by the previous consumer: TAKEN, or READY below its read_pos.
    if (phase == kTaken || phase == kHandling || (phase == kReady && pos < taken_below)) {
      if (phase == kHandling) {
        r.flags.fetch_or(kFlagRedelivered, std::memory_order_relaxed);
        ++recovery.redelivered;
      } else {
        ++recovery.requeued;
      }
      r.phase.store(kReady, std::memory_order_release);
    }
    const std::uint32_t now = r.phase.load(std::memory_order_acquire);
    if ((now == kReady || now == kWriting) && (r.flags.load(std::memory_order_relaxed) & kFlagControl) == 0) ++waiting;
    pos += r.total;
  }
  // Recounted, not adjusted: a consumer killed between taking a record and
  // decrementing the count cannot leave it off by one.
  h.depth_offset.store(static_cast<std::int64_t>(h.puts.load(std::memory_order_relaxed) -
                                                h.dropped.load(std::memory_order_relaxed) -
                                                h.taken_total.load(std::memory_order_relaxed) - waiting),
                       std::memory_order_seq_cst);
  h.consumed_seen.store(static_cast<std::int64_t>(h.taken_total.load(std::memory_order_relaxed)) +
                            h.depth_offset.load(std::memory_order_relaxed),
                        std::memory_order_relaxed);
  h.read_pos.store(start, std::memory_order_release);
  h.consumer_pid.store(static_cast<std::uint32_t>(current_pid()), std::memory_order_release);
  h.incarnation.fetch_add(1, std::memory_order_acq_rel);
  h.exit_code.store(kNoExitCode, std::memory_order_relaxed);
  h.host_state.store(static_cast<std::uint32_t>(HostState::running), std::memory_order_release);
  unlock_producers();
  {
    // A new incarnation leases afresh; a slot a filler is still writing is
    // left to lease_reply_slot's check of the filler's pid.
    std::lock_guard lock(slots_mutex_);
    free_slots_.clear();
    for (std::uint32_t i = kReplySlots; i-- > 0;) {
      ReplySlot& slot = slot_at(i);
      // A CAS from what was seen: a late filler may claim an armed slot of
      // the dead incarnation meanwhile, and then it is left to it.
      std::uint64_t seen = slot.state.load(std::memory_order_acquire);
      while ((seen & 3) != kSlotWriting &&
             !slot.state.compare_exchange_weak(seen, kSlotIdle, std::memory_order_acq_rel)) {
      }
      free_slots_.push_back(i);
    }
  }
  futex_wake_all(h.host_state);  // the parent waiting for its host to start
  return recovery;
}

void Mailbox::set_host_state(HostState state, std::optional<int> code) {
  header_->exit_code.store(code ? *code : kNoExitCode, std::memory_order_relaxed);
  header_->host_state.store(static_cast<std::uint32_t>(state), std::memory_order_release);
  futex_wake_all(header_->host_state);
}

void Mailbox::wait_host_state(HostState seen, const Deadline& deadline) const {
  (void)futex_wait(header_->host_state, static_cast<std::uint32_t>(seen), deadline);
}

std::size_t Mailbox::depth() const noexcept {
  auto& h = *header_;
  // The consumer's side first: a record is counted in puts before it can be taken.
  const std::int64_t consumed = static_cast<std::int64_t>(h.taken_total.load(std::memory_order_seq_cst)) +
                                h.depth_offset.load(std::memory_order_seq_cst);
  const auto d = static_cast<std::int64_t>(h.puts.load(std::memory_order_seq_cst) -
                                           h.dropped.load(std::memory_order_seq_cst)) -
                 consumed;
  return d > 0 ? static_cast<std::size_t>(d) : 0;
}
std::uint64_t Mailbox::write_position() const noexcept { return header_->write_pos.load(std::memory_order_seq_cst); }
std::uint64_t Mailbox::read_position() const noexcept { return header_->read_pos.load(std::memory_order_seq_cst); }
std::uint64_t Mailbox::taken_total() const noexcept { return header_->taken_total.load(std::memory_order_relaxed); }
std::uint64_t Mailbox::dropped() const noexcept { return header_->dropped.load(std::memory_order_relaxed); }
std::uint64_t Mailbox::in_flight() const noexcept {
  // Any process may ask while the consumer completes and producers refill:
  // a record that is not the one expected at `f` (reclaimed and written
  // over meanwhile) moves the walk on to free_pos, or ends it.
  auto& h = *header_;
  std::uint64_t n = 0;
  const std::uint64_t r = h.read_pos.load(std::memory_order_acquire);
  for (std::uint64_t f = h.free_pos.load(std::memory_order_acquire); f < r;) {
    RecordHeader& rec = record_at(f);
    const auto phase = rec.phase.load(std::memory_order_acquire);
    const std::uint64_t total = rec.total;
    if (rec.pos != f || total == 0 || total % kAlign != 0) {
      const std::uint64_t free_now = h.free_pos.load(std::memory_order_acquire);
      if (free_now <= f) break;  // not a record and not reclaimed: give up
      f = free_now;
      continue;
    }
    if (phase == kReady || phase == kTaken || phase == kHandling) ++n;  // READY below read_pos: taken
    f += total;
  }
  return n;
}
pid_t Mailbox::consumer_pid() const noexcept {
  return static_cast<pid_t>(header_->consumer_pid.load(std::memory_order_acquire));
}
std::uint32_t Mailbox::incarnation() const noexcept { return header_->incarnation.load(std::memory_order_acquire); }
HostState Mailbox::host_state() const noexcept {
  return static_cast<HostState>(header_->host_state.load(std::memory_order_acquire));
}
std::optional<int> Mailbox::exit_code() const noexcept {
  auto code = header_->exit_code.load(std::memory_order_relaxed);
  if (code == kNoExitCode) return std::nullopt;
  return static_cast<int>(code);
}
MailboxPolicy Mailbox::policy() const noexcept { return static_cast<MailboxPolicy>(header_->policy); }
std::size_t Mailbox::capacity() const noexcept { return header_->capacity; }
std::size_t Mailbox::in_flight_limit() const noexcept { return header_->in_flight_limit; }
std::size_t Mailbox::max_message_bytes() const noexcept {
  return static_cast<std::size_t>(header_->data_bytes / 2 - sizeof(RecordHeader));
}
// ---- reply slots

Mailbox::ReplySlot& Mailbox::slot_at(std::uint32_t index) const noexcept {
  return *std::launder(reinterpret_cast<ReplySlot*>(reinterpret_cast<std::byte*>(header_) + kSlotsOffset +
                                                     std::uint64_t{index} * sizeof(ReplySlot)));
}

namespace {
std::byte* slot_payload(void* header, std::uint32_t index) {
  return static_cast<std::byte*>(header) + kSlotPayloadsOffset + std::uint64_t{index} * Mailbox::kReplySlotBytes;
}
}  // namespace

std::optional<std::uint32_t> Mailbox::lease_reply_slot(std::uint64_t key) {
  std::lock_guard lock(slots_mutex_);
  for (std::size_t tries = free_slots_.size(); tries > 0; --tries) {
    const std::uint32_t index = free_slots_.back();
    free_slots_.pop_back();
    ReplySlot& slot = slot_at(index);
    std::uint64_t seen = slot.state.load(std::memory_order_acquire);
    if ((seen & 3) == kSlotWriting) {
      // A late filler is still copying (a reply to a request given up on):
      // try the slot again later, unless the filler died there.
      const std::uint32_t pid = slot.writer_pid.load(std::memory_order_acquire);
      if (process_alive(static_cast<pid_t>(pid))) {
        free_slots_.insert(free_slots_.begin(), index);
        continue;
      }
    }
    // A free slot is idle, filled or a dead writer's: no filler can move
    // it. writer_pid is cleared first, for the next filler to claim.
    slot.writer_pid.store(0, std::memory_order_release);
    if (!slot.state.compare_exchange_strong(seen, slot_state(key, kSlotArmed), std::memory_order_acq_rel)) {
      free_slots_.insert(free_slots_.begin(), index);
      continue;
    }
    return index;
  }
  return std::nullopt;
}

void Mailbox::release_reply_slot(std::uint32_t index, std::uint64_t key) noexcept {
  std::uint64_t armed = slot_state(key, kSlotArmed);
  slot_at(index).state.compare_exchange_strong(armed, kSlotIdle, std::memory_order_acq_rel);  // a late reply fails
  std::lock_guard lock(slots_mutex_);
  free_slots_.push_back(index);
}

bool Mailbox::fill_reply_slot(std::uint32_t index, std::uint64_t key, std::uint8_t kind,
                              std::span<const std::byte> bytes) {
  if (index >= kReplySlots || bytes.size() > kReplySlotBytes) return false;
  ReplySlot& slot = slot_at(index);
  const auto me = static_cast<std::uint32_t>(current_pid());
  std::uint32_t nobody = 0;
  if (!slot.writer_pid.compare_exchange_strong(nobody, me, std::memory_order_acq_rel)) return false;
  std::uint64_t expected = slot_state(key, kSlotArmed);
  if (!slot.state.compare_exchange_strong(expected, slot_state(key, kSlotWriting), std::memory_order_acq_rel)) {
    std::uint32_t mine = me;  // not ours to fill (another key): give the claim back
    slot.writer_pid.compare_exchange_strong(mine, 0, std::memory_order_acq_rel);
    return false;
  }
  if (!bytes.empty()) std::memcpy(slot_payload(header_, index), bytes.data(), bytes.size());
  slot.length = static_cast<std::uint32_t>(bytes.size());
  slot.kind = kind;
  expected = slot_state(key, kSlotWriting);
  if (!slot.state.compare_exchange_strong(expected, slot_state(key, kSlotFilled), std::memory_order_acq_rel))
    return false;  // the leasing side took the slot back (it thought us dead): nothing was delivered
  wake_reply_slot(index);
  return true;
}

std::optional<Mailbox::SlotReply> Mailbox::filled_reply_slot(std::uint32_t index, std::uint64_t key) const noexcept {
  const ReplySlot& slot = slot_at(index);
  if (slot.state.load(std::memory_order_acquire) != slot_state(key, kSlotFilled)) return std::nullopt;
  return SlotReply{slot.kind, {slot_payload(header_, index), slot.length}};
}

std::uint32_t Mailbox::reply_slot_seq(std::uint32_t index) const noexcept {
  return slot_at(index).seq.load(std::memory_order_seq_cst);
}

void Mailbox::wait_reply_slot(std::uint32_t index, std::uint32_t seq, const Deadline& deadline) const {
  ReplySlot& slot = slot_at(index);
  slot.waiting.fetch_add(1, std::memory_order_seq_cst);
  if (slot.seq.load(std::memory_order_seq_cst) == seq) {
    auto tick = Deadline::after(kLivenessTick);
    auto left = deadline.remaining();
    futex_wait(slot.seq, seq, (left && *left < kLivenessTick) ? deadline : tick);
  }
  slot.waiting.fetch_sub(1, std::memory_order_seq_cst);
}

void Mailbox::wake_reply_slot(std::uint32_t index) noexcept {
  ReplySlot& slot = slot_at(index);
  slot.seq.fetch_add(1, std::memory_order_seq_cst);
  if (slot.waiting.load(std::memory_order_seq_cst) != 0) futex_wake_all(slot.seq);
}

void Mailbox::retire() noexcept { header_->retired.store(1, std::memory_order_release); }
bool Mailbox::retired() const noexcept { return header_->retired.load(std::memory_order_acquire) != 0; }
void Mailbox::unlink() noexcept {
  try {
    shm_.unlink();
  } catch (const Error&) {
  }
}

}  // namespace mpx::actors::detail
