// mpx/actors/detail/status_segment.hpp: where a running supervisor publishes
// its snapshot (JSON) for mpx-top, a named shared-memory segment
// "mpx-top.<supervisor name>" of the user's /dev/shm.
//
// One writer (the supervisor's process), any number of readers, no lock: a
// sequence word is odd while the text is rewritten (a seqlock), readers
// retry. The segment is unlinked by the writer's destructor, and by the
// shared-memory tracker when the supervisor's process dies; readers do not
// hold it (they attach untracked), and a writer finding the segment of a
// writer that is gone (not unlinked yet) replaces it. A parent supervisor
// reads its nested supervisors' segments to show their children.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "mpx/shared_memory.hpp"

namespace mpx::actors::detail {

[[nodiscard]] std::string status_segment_name(const std::string& supervisor);

class StatusWriter {
 public:
  // Creates the segment (replacing one a dead writer left); when another
  // live tree already publishes under this name, ok() is false and publish()
  // does nothing (logged once).
  explicit StatusWriter(const std::string& supervisor);
  StatusWriter(const StatusWriter&) = delete;
  StatusWriter& operator=(const StatusWriter&) = delete;
  ~StatusWriter();
  [[nodiscard]] bool ok() const { return shm_.has_value(); }
  // Replaces the published text (cut at the segment's capacity, 1 MiB).
  void publish(std::string_view json);

 private:
  std::optional<SharedMemory> shm_;
};

// The text a running tree publishes, or nullopt when no tree of that name runs.
[[nodiscard]] std::optional<std::string> read_status(const std::string& supervisor);

}  // namespace mpx::actors::detail
