// The supervisor status segment (see mpx/actors/detail/status_segment.hpp).
#include "mpx/actors/detail/status_segment.hpp"

#include <unistd.h>

#include <atomic>
#include <cstring>
#include <new>
#include <thread>

#include "mpx/detail/identity.hpp"
#include "mpx/logging.hpp"

namespace mpx::actors::detail {

namespace {

constexpr std::uint64_t kMagic = 0x7375746174737870ULL;  // "pxstatus"
constexpr std::size_t kCapacity = 1u << 20;

struct StatusHeader {
  std::uint64_t magic;
  std::atomic<std::uint64_t> seq;  // odd while the text is being rewritten
  std::atomic<std::uint32_t> length;
  std::uint32_t capacity;
  std::int32_t writer_pid;       // who publishes here, to tell a live tree from a dead one's leftover
  std::uint64_t writer_marker;   // task_marker(writer_pid): against pid reuse
};

// Readers attach without becoming holders of the segment (Lifetime::persistent
// on attach does not register with the shared-memory tracker): a reader must
// not keep a dead tree's segment alive, or the tree restarted under the same
// name could not publish.
std::optional<SharedMemory> attach(const std::string& supervisor) {
  try {
    return SharedMemory(status_segment_name(supervisor), false, 0, SharedMemory::Lifetime::persistent);
  } catch (const SharedMemoryError&) {
    return std::nullopt;
  }
}

// The segment of that name was left by a writer that is gone (SIGKILLed, and
// the tracker has not unlinked it yet): removes it and says so.
bool remove_if_stale(const std::string& supervisor) {
  auto shm = attach(supervisor);
  if (!shm || shm->size() < sizeof(StatusHeader)) return false;
  const auto* header = std::launder(reinterpret_cast<const StatusHeader*>(shm->buf().data()));
  if (header->magic != kMagic) return false;
  char state = 0;
  std::uint64_t start = 0;
  const pid_t pid = header->writer_pid;
  const std::uint64_t marker = header->writer_marker;
  const bool gone = !mpx::detail::read_proc_stat(pid, state, start) || state == 'Z' ||
                    (marker != 0 && mpx::detail::task_marker(pid) != marker);
  if (!gone) return false;
  try {
    shm->unlink();
  } catch (const SharedMemoryError&) {
    // unlinked meanwhile (the tracker): creating it again is what we want
  }
  return true;
}

}  // namespace

std::string status_segment_name(const std::string& supervisor) { return "mpx-top." + supervisor; }

StatusWriter::StatusWriter(const std::string& supervisor) {
  for (bool retried = false;; retried = true) {
    try {
      shm_.emplace(status_segment_name(supervisor), true, static_cast<std::int64_t>(sizeof(StatusHeader) + kCapacity));
      break;
    } catch (const FileExistsError&) {
      if (!retried && remove_if_stale(supervisor)) continue;
      get_logger()->warn("mpx supervisor {}: another running tree publishes its status under this name; mpx-top "
                         "shows that one",
                         supervisor);
      return;
    } catch (const SharedMemoryError& e) {
      get_logger()->warn("mpx supervisor {}: no status segment for mpx-top: {}", supervisor, e.what());
      return;
    }
  }
  auto* header = new (shm_->buf().data()) StatusHeader{};
  header->capacity = kCapacity;
  header->writer_pid = ::getpid();
  header->writer_marker = mpx::detail::task_marker(header->writer_pid);
  header->magic = kMagic;
}

StatusWriter::~StatusWriter() {
  if (!shm_) return;
  try {
    shm_->unlink();
  } catch (const Error&) {
  }
}

void StatusWriter::publish(std::string_view json) {
  if (!shm_) return;
  auto* header = std::launder(reinterpret_cast<StatusHeader*>(shm_->buf().data()));
  auto* text = reinterpret_cast<char*>(shm_->buf().data() + sizeof(StatusHeader));
  const std::size_t n = std::min<std::size_t>(json.size(), header->capacity);
  header->seq.fetch_add(1, std::memory_order_acq_rel);  // odd: writing (acquire: the copy stays after it)
  std::memcpy(text, json.data(), n);
  header->length.store(static_cast<std::uint32_t>(n), std::memory_order_relaxed);
  header->seq.fetch_add(1, std::memory_order_release);  // even: complete
}

std::optional<std::string> read_status(const std::string& supervisor) {
  auto shm = attach(supervisor);
  if (!shm) return std::nullopt;
  if (shm->size() < sizeof(StatusHeader)) return std::nullopt;
  auto* header = std::launder(reinterpret_cast<StatusHeader*>(shm->buf().data()));
  const auto* text = reinterpret_cast<const char*>(shm->buf().data() + sizeof(StatusHeader));
  if (header->magic != kMagic) return std::nullopt;
  for (int attempt = 0; attempt < 1000; ++attempt) {
    const std::uint64_t before = header->seq.load(std::memory_order_acquire);
    if (before % 2 == 1) {
      std::this_thread::yield();
      continue;
    }
    const std::uint32_t n = std::min<std::uint32_t>(header->length.load(std::memory_order_relaxed), header->capacity);
    std::string out(text, n);
    // A read-modify-write with release semantics keeps the copy before it
    // (a fence would do, but ThreadSanitizer builds do not support fences).
    if (header->seq.fetch_add(0, std::memory_order_acq_rel) == before) return out;
  }
  return std::nullopt;
}

}  // namespace mpx::actors::detail
