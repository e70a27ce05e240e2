// mpx/queue.hpp: Queue, SimpleQueue and JoinableQueue, as multiprocessing's.
//
//     mpx::Queue<std::string> q;          // unbounded; mpx::Queue<int> q(5) holds at most 5
//     mpx::Process p([&] { q.put("hi"); });
//     p.start();
//     std::string s = q.get();            // "hi"
//
// Contract
// - Create the queue in a parent; every process forked afterwards shares it
//   (Python's fork semantics). A queue may also be an argument of a process
//   started with forkserver or spawn: its files and readable_fd() travel as
//   descriptors (mpx/detail/fd_passing.hpp); the child's handle has its own
//   "closed" flag. Anywhere else (a Queue inside a queued message), encoding
//   one throws SyncError, as Python's "Queue objects should only be shared
//   between processes through inheritance". A Queue object is a cheap shared handle: copies
//   in one process share one mapping and one "closed" flag; the mapping lives
//   as long as any process holds a handle. Any thread of any process may call
//   put/get concurrently: many producers, many consumers.
// - T is anything mpx::encode/decode handle (serialization.hpp). Delivery
//   (the table in docs/queues-and-pipes.md, "Delivery guarantees"):
//     no process dies             each item to exactly one get, whole
//     a consumer dies in get      the item it held is lost (at most once)
//     a producer dies in put      that item is lost, never delivered in part
//     put(x, timeout) times out   nothing of x is delivered
//     get's decoding throws       the item is consumed, not redelivered
//   Never twice, never torn; order: the order the puts claimed a cell (FIFO
//   per producer, and globally by claim order).
// - put blocks while maxsize items are queued (maxsize 0: unbounded, see
//   below); put(x, timeout) throws Full after the timeout; put_nowait and
//   put(x, false) throw Full at once. get blocks while the queue is empty;
//   get(timeout) and get_nowait throw Empty. A zero or negative timeout does
//   not wait: Full / Empty at once, as Python's multiprocessing.Queue
//   (docs/queues-and-pipes.md, "Timeouts", has the rule for every class).
// - Unbounded (maxsize 0): items of any size and in any number (up to 2^30)
//   wait with no consumer running; put never fails for want of room (it
//   waits at most 10 ms, see below, and put_nowait not at all). The
//   first QueueOptions::capacity items (262144 by default) take the ring's
//   base cells; a deeper backlog grows into cell segments of a growth file
//   (64 bytes an item), which stay mapped while the queue lives (their
//   spilled message bytes are returned as it drains). A blocking put gives
//   the consumers 10 ms to free a base cell before it grows the ring, so a
//   consumer that keeps up keeps the queue in its base cells
//   (docs/queues-and-pipes.md, "Unbounded queues", "Limits").
//   QueueOptions::grow_cells = false keeps the old limit: `capacity` items,
//   then put blocks (put(x, timeout), put_nowait: Full). A bounded queue
//   counts items against maxsize, whatever their size.
// - Messages of any size: up to 48 encoded bytes travel inside a ring cell;
//   longer ones through a shared buffer ("lane") of the smallest class they
//   fit: 4096 lanes of 256 bytes, 1024 of 1 KiB, 1024 of 4 KiB, 64 of 1 MiB
//   (QueueOptions; when a class has no free lane, the next larger class
//   serves; address space is reserved, memory touched only as used, so a
//   queued message costs memory in proportion to its size). When no lane is free, or the
//   message is larger than a lane, it is copied into a block of a growth
//   file (64 MiB chunks, mapped on demand; a chunk's memory is returned to
//   the system once every message in it was read). put returns once the
//   item is in shared memory; it never waits for a consumer.
// - Byte budget (QueueOptions::max_bytes, 0 = none): put blocks (put(x,
//   timeout): Full) while the encoded bytes of the items queued plus x's
//   would exceed it; an empty queue takes an item of any size. Backpressure
//   by bytes for services; independent of maxsize.
// - Event loops: readable_fd() is an eventfd that polls readable when an
//   item may be waiting. After it polls readable, take items with
//   get_nowait() until it throws Empty: an Empty (of any get) re-arms the
//   descriptor, which then stays quiet until the next put. Producers pay a
//   write(2) only when a consumer armed it, once per arming. mpx::wait
//   (wait.hpp) waits on queues, connections and processes together.
// - close(): this process (all its copies of the handle) is done with the
//   queue: every later put, get, qsize, empty, full, readable_fd,
//   queued_bytes, task_done, join and unfinished_tasks (of
//   Queue, SimpleQueue and JoinableQueue) throws QueueClosed; close(),
//   is_closed(), maxsize() and join_thread() still answer. join_thread(): there is no
//   feeder thread, every put has reached shared memory when it returns, so it
//   returns at once. Items put before close() or before the process exits
//   (even by _exit or SIGKILL after put returned) are delivered.
// - qsize(): items claimed by producers and not yet claimed by consumers;
//   exact when no put/get is in progress, a snapshot otherwise (Python's is
//   approximate too). empty() == (qsize() == 0); full() == (qsize() >= maxsize).
// - Faults (docs/queues-and-pipes.md has the details): a process SIGKILLed
//   inside put or get never blocks the others; the item it was putting (not
//   yet published) or getting (taken, not yet returned) is lost, nothing
//   else. Recovery happens within ~20-50 ms of someone waiting on that cell,
//   also when the dead process' pid already runs another process (identity
//   by pidfs inode, as locks; limits in mpx/detail/ring.hpp, "Faults").
//   A process killed while blocked (nothing claimed) loses nothing.
// - JoinableQueue: put counts an unfinished task; task_done() uncounts one
//   and throws QueueError when called more often than items were put; join()
//   blocks until the count is zero (join(timeout) returns false on timeout).
//   A consumer that dies between get and task_done leaves the count up (as in
//   Python): join() would wait forever, so services use join(timeout).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstring>
#include <type_traits>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>

#include "mpx/detail/deadline.hpp"
#include "mpx/detail/ring.hpp"
#include "mpx/detail/unique_fd.hpp"
#include "mpx/error.hpp"
#include "mpx/serialization.hpp"
#include "mpx/sync_error.hpp"  // OSError

namespace mpx {

class Waitable;  // wait.hpp

// put on a full queue without waiting, or after its timeout (Python's queue.Full).
class Full : public Error {
 public:
  Full() : Error("mpx::Full: the queue is full") {}
  using Error::Error;
};

// get on an empty queue without waiting, or after its timeout (Python's queue.Empty).
class Empty : public Error {
 public:
  Empty() : Error("mpx::Empty: the queue is empty") {}
  using Error::Error;
};

// Misuse of a queue: use after close(), task_done() too often, bad QueueOptions.
class QueueError : public Error {
 public:
  using Error::Error;
};

// put or get on a queue this process has closed.
class QueueClosed : public QueueError {
 public:
  QueueClosed() : QueueError("mpx::QueueClosed: the queue is closed in this process") {}
};

struct QueueOptions {
  // Cells of the ring; 0 = maxsize when bounded; unbounded: 262144 by
  // default (the base cells; more grow past them unless grow_cells is false).
  std::size_t capacity = 0;
  // Lane classes: a message of 49+ encoded bytes takes a lane of the
  // smallest class it fits, else of a larger one (0 lanes: no such class).
  std::size_t tiny_lanes = 4096;        // messages of 49..tiny_lane_bytes encoded bytes waiting at once
  std::size_t tiny_lane_bytes = 256;
  std::size_t mid_lanes = 1024;         // up to mid_lane_bytes
  std::size_t mid_lane_bytes = 1024;
  std::size_t small_lanes = 1024;       // up to small_lane_bytes
  std::size_t small_lane_bytes = 4096;
  std::size_t lanes = 64;               // larger messages waiting at once
  std::size_t lane_bytes = (1u << 20) + 4096;  // 1 MiB payloads fit with their envelope; larger go to blocks
  std::size_t max_bytes = 0;            // byte budget of the items queued (0: none; see the contract)
  bool grow_cells = true;               // unbounded: grow past `capacity` items (false: put blocks there)
};

namespace detail {

struct QueueCore {
  QueueCore(Ring r, std::size_t max);
  QueueCore(Ring r, std::size_t max, UniqueFd event);  // a received queue: its eventfd came along
  Ring ring;
  UniqueFd event_fd;  // readable_fd(): an eventfd shared by every process forked afterwards
  std::size_t maxsize;
  std::atomic<bool> closed{false};
  bool joinable = false;
};

inline std::shared_ptr<QueueCore> make_queue_core(std::size_t maxsize, const QueueOptions& options) {
  RingOptions ro;
  ro.capacity = options.capacity ? options.capacity : (maxsize ? maxsize : (std::size_t{1} << 18));
  if (maxsize && ro.capacity > maxsize) ro.capacity = maxsize;
  ro.tiny_lanes = options.tiny_lanes;
  ro.tiny_lane_bytes = options.tiny_lane_bytes;
  ro.mid_lanes = options.mid_lanes;
  ro.mid_lane_bytes = options.mid_lane_bytes;
  ro.small_lanes = options.small_lanes;
  ro.small_lane_bytes = options.small_lane_bytes;
  ro.lanes = options.lanes;
  ro.lane_bytes = options.lane_bytes;
  ro.spill = true;
  ro.grow = maxsize == 0 && options.grow_cells;
  ro.max_bytes = options.max_bytes;
  return std::make_shared<QueueCore>(Ring::create(ro), maxsize);
}

// A queue as a process argument (forkserver, spawn; queue_passing.cpp).
struct PassedQueue {
  std::uint32_t base = 0;    // descriptor indexes (fd_passing.hpp)
  std::uint32_t growth = 0;
  std::uint32_t event = 0;
  RingOptions options;
  std::uint64_t maxsize = 0;
  bool joinable = false;

  template <class Archive>
  void serialize(Archive& ar) {
    ar(base, growth, event, options, maxsize, joinable);
  }
};
[[nodiscard]] PassedQueue send_queue(const QueueCore& core);
[[nodiscard]] std::shared_ptr<QueueCore> receive_queue(const PassedQueue& passed);

// Event-loop readiness of a queue (wait.cpp): queue_signal_reader writes the
// eventfd (a put found the reader armed); queue_rearm_reader, after an Empty:
// unless still armed, drains the eventfd, arms the ring, and signals at once
// if items arrived meanwhile (a load when it is still armed).
void queue_signal_reader(QueueCore& core) noexcept;
void queue_rearm_reader(QueueCore& core) noexcept;

// One encode buffer per thread: encode_into reuses its capacity.
inline Bytes& encode_buffer() {
  thread_local Bytes buffer;
  return buffer;
}

// Zero or negative: already expired, so the call does not wait (Python).
inline Deadline timeout_deadline(std::chrono::duration<double> timeout) { return Deadline::after(timeout); }

}  // namespace detail

template <class T>
class Queue {
 public:
  using value_type = T;
  using Timeout = std::chrono::duration<double>;

  // maxsize 0: unbounded (see the header comment). Throws QueueError for a
  // maxsize over 2^26 or bad QueueOptions, and mpx::OSError (errno kept) if
  // the mapping cannot be made.
  explicit Queue(std::size_t maxsize = 0, const QueueOptions& options = {}) : core_(make(maxsize, options)) {}

  Queue(const Queue&) = default;
  Queue& operator=(const Queue&) = default;
  Queue(Queue&&) noexcept = default;
  Queue& operator=(Queue&&) noexcept = default;
  ~Queue() = default;

  void put(const T& item) { put_impl(item, detail::Deadline::never(), true); }
  void put(const T& item, Timeout timeout) { put_impl(item, detail::timeout_deadline(timeout), true); }
  // Python's put(obj, block, timeout).
  void put(const T& item, bool block, std::optional<Timeout> timeout = std::nullopt) {
    put_impl(item, block && timeout ? detail::timeout_deadline(*timeout) : detail::Deadline::never(), block);
  }
  void put_nowait(const T& item) { put_impl(item, detail::Deadline::never(), false); }

  [[nodiscard]] T get() { return get_impl(detail::Deadline::never(), true); }
  [[nodiscard]] T get(Timeout timeout) { return get_impl(detail::timeout_deadline(timeout), true); }
  // Python's get(block, timeout).
  [[nodiscard]] T get(bool block, std::optional<Timeout> timeout = std::nullopt) {
    return get_impl(block && timeout ? detail::timeout_deadline(*timeout) : detail::Deadline::never(), block);
  }
  [[nodiscard]] T get_nowait() { return get_impl(detail::Deadline::never(), false); }

  [[nodiscard]] std::size_t qsize() const {
    check_open();
    return core_->ring.size();
  }
  [[nodiscard]] bool empty() const { return qsize() == 0; }
  [[nodiscard]] bool full() const { return core_->maxsize != 0 && qsize() >= core_->maxsize; }
  [[nodiscard]] std::size_t maxsize() const { return core_->maxsize; }

  // An eventfd that polls readable when an item may be waiting (see the
  // contract: drain with get_nowait() until Empty). Owned by the queue.
  [[nodiscard]] int readable_fd() const {
    check_open();
    return core_->event_fd.get();
  }
  // Byte budget: encoded bytes of the items queued (0 without max_bytes).
  [[nodiscard]] std::size_t queued_bytes() const {
    check_open();
    return core_->ring.queued_bytes();
  }

  void close() { core_->closed.store(true, std::memory_order_release); }
  [[nodiscard]] bool is_closed() const { return core_->closed.load(std::memory_order_acquire); }
  // Puts are in shared memory when put returns: nothing to wait for.
  void join_thread() {}
  void cancel_join_thread() {}

  // As a forkserver or spawn argument only (see the contract); SyncError elsewhere.
  template <class Archive>
  void save(Archive& ar) const {
    check_open();
    ar(detail::send_queue(*core_));
  }
  template <class Archive>
  void load(Archive& ar) {
    detail::PassedQueue passed;
    ar(passed);
    core_ = detail::receive_queue(passed);
  }

 protected:
  friend class Waitable;
  static std::shared_ptr<detail::QueueCore> make(std::size_t maxsize, const QueueOptions& options) {
    if (maxsize > (std::size_t{1} << 26)) throw QueueError("mpx queue: maxsize must be at most 2^26");
    return detail::make_queue_core(maxsize, options);
  }
  void check_open() const {
    if (core_->closed.load(std::memory_order_acquire)) throw QueueClosed();
  }
  // Both ends of a Queue<T> are the same object in the same build, so a type
  // the serialization layer copies as raw bytes travels without the envelope
  // (no type tag or checksum to check: the type is fixed at compile time and
  // shared memory does not corrupt bytes). Everything else is encode/decode.
  static constexpr bool kRaw = raw_encoding_v<T> && std::is_default_constructible_v<T>;

  void put_impl(const T& item, const detail::Deadline& deadline, bool block) {
    check_open();
    std::span<const std::byte> bytes;
    if constexpr (kRaw) {
      bytes = std::span<const std::byte>(reinterpret_cast<const std::byte*>(&item), sizeof(T));
    } else {
      Bytes& buffer = detail::encode_buffer();
      encode_into(buffer, item);
      bytes = std::span<const std::byte>(buffer.data(), buffer.size());
    }
    if (core_->joinable) core_->ring.add_unfinished();
    if (!core_->ring.put(bytes, deadline, block)) {
      if (core_->joinable) (void)core_->ring.task_done();
      throw Full();
    }
    if (core_->ring.reader_signal_due()) detail::queue_signal_reader(*core_);
  }
  T get_impl(const detail::Deadline& deadline, bool block) {
    check_open();
    std::optional<T> out;
    auto sink = [&](std::span<const std::byte> bytes) {
      if constexpr (kRaw) {
        if (bytes.size() != sizeof(T))
          throw DecodeError(DecodeError::Kind::truncated, "mpx queue: raw item of " + std::to_string(bytes.size()) +
                                                              " bytes, expected " + std::to_string(sizeof(T)));
        out.emplace();
        std::memcpy(static_cast<void*>(&*out), bytes.data(), sizeof(T));
      } else {
        out.emplace(decode<T>(bytes));
      }
    };
    if (!core_->ring.get(detail::ByteSink(sink), deadline, block)) {
      detail::queue_rearm_reader(*core_);
      throw Empty();
    }
    return std::move(*out);
  }

  std::shared_ptr<detail::QueueCore> core_;
};

// Python's SimpleQueue: unbounded, get/put/empty/close; plus timed get and
// put (mpx's rule: every blocking call has a timed variant), which throw
// Empty / Full as Queue's.
template <class T>
class SimpleQueue {
 public:
  using value_type = T;
  using Timeout = typename Queue<T>::Timeout;
  explicit SimpleQueue(const QueueOptions& options = {}) : queue_(0, options) {}
  void put(const T& item) { queue_.put(item); }
  void put(const T& item, Timeout timeout) { queue_.put(item, timeout); }
  [[nodiscard]] T get() { return queue_.get(); }
  [[nodiscard]] T get(Timeout timeout) { return queue_.get(timeout); }
  [[nodiscard]] bool empty() const { return queue_.empty(); }
  void close() { queue_.close(); }

  // As Queue's: a forkserver or spawn argument only.
  template <class Archive>
  void save(Archive& ar) const {
    ar(queue_);
  }
  template <class Archive>
  void load(Archive& ar) {
    ar(queue_);
  }

 private:
  Queue<T> queue_;
};

template <class T>
class JoinableQueue : public Queue<T> {
 public:
  explicit JoinableQueue(std::size_t maxsize = 0, const QueueOptions& options = {}) : Queue<T>(maxsize, options) {
    this->core_->joinable = true;
  }

  // Marks one item got earlier as processed. Throws QueueError when called
  // more times than items were put.
  void task_done() {
    this->check_open();
    if (!this->core_->ring.task_done())
      throw QueueError("mpx::JoinableQueue: task_done() called more times than items were put");
  }
  // Blocks until every item put has been marked done.
  void join() {
    this->check_open();
    (void)this->core_->ring.wait_all_done(detail::Deadline::never());
  }
  // As join(), but gives up after `timeout`: true when every item was done.
  [[nodiscard]] bool join(std::chrono::duration<double> timeout) {
    this->check_open();
    return this->core_->ring.wait_all_done(detail::timeout_deadline(timeout));
  }
  // Items put and not yet marked done (shared by all processes).
  [[nodiscard]] std::size_t unfinished_tasks() const {
    this->check_open();
    return static_cast<std::size_t>(this->core_->ring.unfinished());
  }
};

}  // namespace mpx
