// mpx/actors/detail/mailbox.hpp: a host's crash-safe mailbox, a log of
// variable-sized records in a named shared-memory segment.
//
// Contract
// - Many producers (any thread of any process that opened the segment by
//   name), one consumer: the gateway thread of the host process currently
//   attached (attach_consumer). The segment is created by the host's parent
//   and outlives the host, so a host that dies loses nothing it had not
//   finished: records go READY -> taken (read_pos passes it: handed to an
//   actor's queue; marked TAKEN only under drop_oldest, else it stays READY
//   below read_pos) -> HANDLING (its handler runs) -> DONE, and
//   attach_consumer() of the next incarnation requeues every taken record
//   and turns every HANDLING one to READY flagged `redelivered`, in log
//   order.
// - Producers serialise on a small robust lock in the segment only to reserve
//   space and write the record header; the payload is copied outside it. A
//   producer killed while holding the lock is detected by the next one
//   (liveness of the pid in the lock word) and the lock is taken over. A
//   producer killed after its reservation moved write_pos (holding the lock
//   or copying) leaves a record that the consumer skips once it has waited
//   at it a liveness tick (20 ms) and the pid is gone: that message is lost
//   (it was never sent). Killed before, it left nothing.
// - put blocks (until the deadline) while `capacity` messages wait or the
//   log bytes are exhausted; the policy in the header decides (see
//   mailbox_options.hpp). It returns false for "full"; it throws
//   MessageTooLarge for a record over bytes / 2.
// - take() hands out a view of the payload in shared memory, valid until the
//   record is completed. mark_handling/complete may be called from any thread
//   of the consumer process.
// - Ordering: records are taken in reservation order; one producer's puts
//   are reserved in the order it made them.
// - Reply slots: beside the log, kReplySlots slots of kReplySlotBytes each
//   take a reply straight to a thread of the consumer process that waits
//   for it (a request from plain code), without the log and the gateway.
//   Only the consumer process leases a slot (for one request id) and
//   releases it; any process fills it, once, for that id (a CAS: a late
//   reply to a released or re-leased slot fails and goes by the log). A
//   filler that dies while copying leaves the slot unusable until the
//   leasing side, at a later lease, sees its pid gone. Slot headers share
//   one page; a slot's payload page is touched only when it is used.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "mpx/actors/errors.hpp"
#include "mpx/actors/mailbox_options.hpp"
#include "mpx/detail/deadline.hpp"
#include "mpx/shared_memory.hpp"

namespace mpx::actors::detail {

struct MailboxHeader;
struct RecordHeader;

// What the host process attached to a mailbox is doing, as its parent and
// its peers see it.
enum class HostState : std::uint32_t { never_started = 0, running = 1, stopped = 2, died = 3 };

// How a record counts against the mailbox's bounds.
enum class RecordClass : std::uint32_t {
  message = 0,   // counts against `capacity`; drop_oldest may drop it
  request = 1,   // counts against `capacity`; never dropped (its requester waits for it)
  control = 2,   // replies and control packets: only the log's bytes bound them; never dropped
};

class Mailbox {
 public:
  using Deadline = mpx::detail::Deadline;

  // A new segment named `name` (SharedMemory naming, unlinked when no holder
  // of it lives). Throws ActorError for bad options, SharedMemoryError.
  static std::shared_ptr<Mailbox> create(const std::string& name, const MailboxOptions& options);
  // Attaches to an existing segment; throws FileNotFoundError when none.
  static std::shared_ptr<Mailbox> open(const std::string& name);
  // create(), or, when a segment of that name is left by an owner (the
  // process that created it) that died without unlinking it, e.g. a
  // SIGKILLed nested supervisor whose senders still hold the name: takes it
  // over, with every record still in it (`adopted` is set). Throws
  // FileExistsError when its owner is alive: a real name clash.
  static std::shared_ptr<Mailbox> create_or_adopt(const std::string& name, const MailboxOptions& options,
                                                  bool& adopted);
  // The pid of the process that created or last adopted the segment.
  [[nodiscard]] pid_t owner_pid() const noexcept;

  // Producer side. `head` and `body` are concatenated into one record.
  // False when full (policy fail, block=false, or the deadline passed).
  [[nodiscard]] bool put(std::span<const std::byte> head, std::span<const std::byte> body, const Deadline& deadline,
                         bool block = true, RecordClass record_class = RecordClass::message);

  struct Taken {
    std::uint64_t pos;
    std::span<const std::byte> bytes;
    bool redelivered;
  };
  // Consumer side: the next record, or nullopt at the deadline, after
  // interrupt_consumer(), or (when given) once `*wake` is true: set it,
  // then call interrupt_consumer(), and the consumer cannot sleep past it.
  [[nodiscard]] std::optional<Taken> take(const Deadline& deadline, const std::atomic<bool>* wake = nullptr);
  void mark_handling(std::uint64_t pos);
  void complete(std::uint64_t pos);
  // complete() in two steps, for a run of records: mark each done, then
  // reclaim_done() once (until then their bytes stay in the log).
  void mark_done(std::uint64_t pos);
  void reclaim_done();
  // Wakes a consumer blocked in take() (which then returns nullopt once).
  void interrupt_consumer();
  // take() wakes producers blocked at `capacity` only once the depth falls to
  // capacity - max(1, capacity/8) (or it is about to sleep); a consumer that
  // stops taking for another reason (its actors are behind) calls this first.
  // Producers also re-check on their own every 20 ms.
  void notify_producers();

  struct Recovery {
    std::uint64_t requeued = 0;     // taken by a dead consumer, not yet handled
    std::uint64_t redelivered = 0;  // HANDLING when the consumer died
  };
  // Makes the calling process the consumer (incarnation + 1) and requeues
  // what the previous consumer held. Call before take().
  Recovery attach_consumer();
  // The consumer says it has stopped (state stopped/died) with an exit code.
  void set_host_state(HostState state, std::optional<int> exit_code = std::nullopt);
  // Sleeps while host_state() is `seen`, until attach_consumer() or
  // set_host_state() stores another state (or the deadline); may return early.
  void wait_host_state(HostState seen, const Deadline& deadline) const;

  [[nodiscard]] std::size_t depth() const noexcept;        // messages waiting, not yet taken
  // Log positions: every record reserved before write_position() was read
  // has been taken once read_position() reaches it.
  [[nodiscard]] std::uint64_t write_position() const noexcept;
  [[nodiscard]] std::uint64_t read_position() const noexcept;
  [[nodiscard]] std::uint64_t dropped() const noexcept;    // by drop_oldest
  [[nodiscard]] std::uint64_t taken_total() const noexcept;  // messages taken by the host, all incarnations
  [[nodiscard]] std::uint64_t in_flight() const noexcept;  // taken, not yet completed (records)
  [[nodiscard]] pid_t consumer_pid() const noexcept;
  [[nodiscard]] std::uint32_t incarnation() const noexcept;
  [[nodiscard]] HostState host_state() const noexcept;
  [[nodiscard]] std::optional<int> exit_code() const noexcept;
  [[nodiscard]] MailboxPolicy policy() const noexcept;
  [[nodiscard]] std::size_t capacity() const noexcept;
  [[nodiscard]] std::size_t in_flight_limit() const noexcept;
  [[nodiscard]] std::size_t max_message_bytes() const noexcept;
  [[nodiscard]] const std::string& name() const noexcept { return shm_.name(); }
  // Marks the segment as retired (its host was shut down for good) so that
  // cached views in other processes reopen the name.
  void retire() noexcept;
  [[nodiscard]] bool retired() const noexcept;
  void unlink() noexcept;

  // ---- reply slots (see the contract above)
  static constexpr std::uint32_t kReplySlots = 64;
  static constexpr std::size_t kReplySlotBytes = 4096;  // the largest reply a slot takes
  // The consumer process: a free slot armed for `key` (a request id,
  // unique to this mailbox across incarnations), or nullopt when none is
  // free. Release it with release_reply_slot(index, key).
  [[nodiscard]] std::optional<std::uint32_t> lease_reply_slot(std::uint64_t key);
  void release_reply_slot(std::uint32_t index, std::uint64_t key) noexcept;
  // Any process: writes a reply (`kind`: the packet kind, reply or error)
  // into slot `index` if it is still armed for `key` and the bytes fit;
  // false otherwise (then send it by the log). Wakes a waiter.
  [[nodiscard]] bool fill_reply_slot(std::uint32_t index, std::uint64_t key, std::uint8_t kind,
                                     std::span<const std::byte> bytes);
  struct SlotReply {
    std::uint8_t kind;
    std::span<const std::byte> bytes;  // valid until the slot is released
  };
  // The leasing process: the reply in slot `index` for `key`, if filled.
  [[nodiscard]] std::optional<SlotReply> filled_reply_slot(std::uint32_t index, std::uint64_t key) const noexcept;
  // Sleeping for a slot: sample reply_slot_seq(), re-check
  // filled_reply_slot() (and whatever else wakes the waiter), then
  // wait_reply_slot(seq, ...): returns once the slot is filled, at a
  // wake_reply_slot() (by anyone who changed what the waiter checks), at
  // the deadline, or at a 20 ms tick, whichever is first.
  [[nodiscard]] std::uint32_t reply_slot_seq(std::uint32_t index) const noexcept;
  void wait_reply_slot(std::uint32_t index, std::uint32_t seq, const Deadline& deadline) const;
  void wake_reply_slot(std::uint32_t index) noexcept;
  struct ReplySlot;  // the slot's header in the segment (mailbox.cpp)

 private:
  explicit Mailbox(SharedMemory shm);
  RecordHeader& record_at(std::uint64_t pos) const;
  void lock_producers();
  void unlock_producers();
  bool drop_oldest_locked();
  std::int64_t waiting_locked(bool fresh);
  bool skip_dead_writer(std::uint64_t r, std::chrono::steady_clock::time_point now);
  bool fits_locked(std::uint64_t end);
  void reclaim();
  [[nodiscard]] std::int64_t low_water() const noexcept;
  void notify_consumer();
  void wait_producers(std::uint32_t seq, const Deadline& deadline);

  // Three cache lines: read by every thread; written by the completing
  // threads (reclaim); written by the consumer's take(). Sharing one made
  // each take() wait for the line a completion had just written.
  SharedMemory shm_;
  MailboxHeader* header_ = nullptr;
  std::byte* data_ = nullptr;
  std::uint64_t data_mask_ = 0;  // data_bytes - 1 when a power of two
  alignas(64) std::mutex reclaim_mutex_;  // free_pos moves under it (threads of the consumer process)
  std::atomic<bool> reclaim_requested_{false};  // a completion the lock holder has to sweep again for
  // When take() last returned a record (the consumer's thread only): it
  // yields before sleeping only while records come in a stream. Stamped
  // when take() first finds nothing after records (as late as the caller's
  // handling of what it took: a stream's records come microseconds apart).
  alignas(64) std::chrono::steady_clock::time_point last_taken_{};
  std::uint64_t taken_count_ = 0;
  std::uint64_t stamped_count_ = 0;
  std::uint64_t stuck_at_ = ~std::uint64_t{0};  // take(): where it last found nothing ready, and since when
  std::chrono::steady_clock::time_point stuck_since_{};
  ReplySlot& slot_at(std::uint32_t index) const noexcept;
  std::mutex slots_mutex_;                 // the free list (this process: the consumer)
  std::vector<std::uint32_t> free_slots_;  // filled by attach_consumer()
};

}  // namespace mpx::actors::detail
