// The supervisor status segment (see mpx/actors/detail/status_segment.hpp).
#include "mpx/actors/detail/status_segment.hpp"

#include <atomic>
#include <cstring>
#include <new>
#include <thread>

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
};

}  // namespace

std::string status_segment_name(const std::string& supervisor) { return "mpx-top." + supervisor; }

StatusWriter::StatusWriter(const std::string& supervisor) {
  try {
    shm_.emplace(status_segment_name(supervisor), true, static_cast<std::int64_t>(sizeof(StatusHeader) + kCapacity));
  } catch (const FileExistsError&) {
    get_logger()->warn("mpx supervisor {}: another running tree publishes its status under this name; mpx-top "
                       "shows that one",
                       supervisor);
    return;
  } catch (const SharedMemoryError& e) {
    get_logger()->warn("mpx supervisor {}: no status segment for mpx-top: {}", supervisor, e.what());
    return;
  }
  auto* header = new (shm_->buf().data()) StatusHeader{};
  header->capacity = kCapacity;
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
  std::optional<SharedMemory> shm;
  try {
    shm.emplace(status_segment_name(supervisor), false);
  } catch (const SharedMemoryError&) {
    return std::nullopt;
  }
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
