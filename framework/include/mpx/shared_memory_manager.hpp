// mpx/shared_memory_manager.hpp: SharedMemoryManager, as
// multiprocessing.managers.SharedMemoryManager: segments made through it
// are freed (unlinked) when it shuts down.
//
//     {
//       mpx::SharedMemoryManager smm;                   // Python: with SharedMemoryManager() as smm:
//       auto shm = smm.SharedMemory(1024);
//       auto sl = smm.ShareableList({std::int64_t{1}, "two"});
//       // ... children forked now attach shm.name() / sl.name() or use the handles
//     }                                                 // both names unlinked here
//
// Contract
// - No server process (Python's runs one): the manager is an object of the
//   process that made it, and that process unlinks the segments. shutdown()
//   (or the destructor) unlinks every segment made through the manager that
//   still has its name; handles and mappings stay valid until closed, as
//   after SharedMemory::unlink(). shutdown() is idempotent; making a segment
//   after it throws SharedMemoryError.
// - Only the process that made the manager may make segments through it or
//   shut it down: a forked child's copy does nothing at destruction and
//   throws SharedMemoryError if used to make a segment (children use the
//   segments themselves, by handle or by name).
// - The segments are Lifetime::tracked: should the process die without
//   shutting the manager down (SIGKILL), the tracker unlinks them once no
//   holder remains (mpx/shared_memory.hpp).
// - Thread-safe; move-only.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "mpx/shareable_list.hpp"
#include "mpx/shared_memory.hpp"

namespace mpx {

class SharedMemoryManager {
 public:
  SharedMemoryManager();
  SharedMemoryManager(SharedMemoryManager&&) noexcept;
  SharedMemoryManager& operator=(SharedMemoryManager&&) noexcept;
  SharedMemoryManager(const SharedMemoryManager&) = delete;
  SharedMemoryManager& operator=(const SharedMemoryManager&) = delete;
  // shutdown() in the owning process; never throws.
  ~SharedMemoryManager();

  // A new segment of `size` bytes with a fresh name (Python: smm.SharedMemory(size)).
  [[nodiscard]] mpx::SharedMemory SharedMemory(std::int64_t size);
  // A new ShareableList with a fresh name (Python: smm.ShareableList(sequence)).
  [[nodiscard]] mpx::ShareableList ShareableList(const std::vector<ShareableList::Item>& items);

  // Unlinks every segment made through the manager (those already unlinked
  // by someone else are skipped). Idempotent.
  void shutdown();
  [[nodiscard]] bool is_shut_down() const;
  // The names of the segments made and not yet freed by shutdown().
  [[nodiscard]] std::vector<std::string> segment_names() const;

 private:
  struct State;
  template <class Make>
  auto make(Make&& make_segment);
  std::unique_ptr<State> state_;
};

}  // namespace mpx
