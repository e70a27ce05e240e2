// mpx/shared_memory.hpp: named shared memory segments, as
// multiprocessing.shared_memory.SharedMemory.
//
//     mpx::SharedMemory shm("haha", true, 256);   // create /dev/shm/haha
//     shm.buf()[0] = std::byte{0xab};
//     mpx::SharedMemory other("haha");             // attach, any process
//     other.close(); shm.close(); shm.unlink();
//
// Interoperability: names follow Python's convention on Linux: the name
// "haha" is the POSIX object "/haha" (shm_open), i.e. the file /dev/shm/haha;
// name() returns it without the slash; generated names are "psm_" + 8 hex
// digits. Python's SharedMemory("haha") and any C program calling
// shm_open("/haha", O_RDWR, 0) open the same bytes, and mpx attaches to
// segments they create.
//
// Lifetime (the tracker rule; see docs/shared-memory.md):
//   A segment created with Lifetime::tracked (the default) is unlinked
//   automatically once no *holder* is alive. Holders are the process that
//   created it and every mpx process that attached it by name, each one
//   together with the children it forks afterwards (they inherit its
//   registration) - until that process exits, by any means including
//   SIGKILL, or someone calls unlink(). A per-user tracker process (own
//   session, immune to SIGINT/SIGTERM/SIGHUP, no fork of the user's tree)
//   does the unlinking. Lifetime::persistent segments are never unlinked
//   automatically. Segments made outside mpx (Python, C) are never unlinked
//   by mpx, and non-mpx attachers do not count as holders.
//
// Handles: SharedMemory is a cheap reference; copies share one mapping.
// close() drops this handle's view (buf() then throws); the memory is
// unmapped when no handle and no primitive placed in it refers to it.
// The destructor closes but never unlinks.
//
// Passing: a SharedMemory can be an argument of a process started with
// forkserver. Its descriptor travels with the request (SCM_RIGHTS,
// mpx/detail/fd_passing.hpp), not its name: the child maps the very segment
// the parent has open, even if its name was unlinked or reused meanwhile.
// Such a child is not a holder of a tracked segment (it did not attach by
// name): the segment may be unlinked once its holders end; the child's
// mapping stays valid. A closed handle cannot be passed (SharedMemoryError).
//
// Errors (all derive from mpx::SharedMemoryError, itself an mpx::Error):
// FileExistsError when creating a name that exists, FileNotFoundError when
// attaching to a name that does not; SharedMemoryError for a bad name
// (empty, containing '/', longer than 253 bytes), a negative size, a size 0
// on create, an empty segment on attach, use after close(), and OS failures;
// creation also throws SharedMemoryError when the tracker refuses this
// process (out of descriptors, 1024 processes served) or does not answer
// within 10 s (detail/shm_tracker.hpp).
// Threads: a handle may be used from several threads; close() must not race
// with buf() on the same handle.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "mpx/detail/fd_passing.hpp"
#include "mpx/error.hpp"

namespace mpx {

class SharedMemoryError : public Error {
 public:
  using Error::Error;
};
class FileExistsError : public SharedMemoryError {
 public:
  using SharedMemoryError::SharedMemoryError;
};
class FileNotFoundError : public SharedMemoryError {
 public:
  using SharedMemoryError::SharedMemoryError;
};

class SharedMemory;
namespace detail {
class SharedMapping;
struct Placement;
Placement place_in(const SharedMemory& shm, std::size_t offset, std::size_t size, std::size_t align,
                   const char* what);
}  // namespace detail

class SharedMemory {
 public:
  enum class Lifetime {
    tracked,     // unlinked when no holder is alive (see above)
    persistent,  // stays until someone calls unlink()
  };

  // Python's SharedMemory(name=None, create=False, size=0). With create, a
  // new segment of `size` bytes (zero-filled; no name: a fresh unique one);
  // without, attaches to the whole of `name` and, as Python, ignores `size`
  // (larger or smaller than the segment): size() reports the real size.
  explicit SharedMemory(std::optional<std::string> name, bool create = false, std::int64_t size = 0,
                        Lifetime lifetime = Lifetime::tracked);
  // A new segment with a fresh unique name.
  [[nodiscard]] static SharedMemory create(std::int64_t size, Lifetime lifetime = Lifetime::tracked) {
    return SharedMemory(std::nullopt, true, size, lifetime);
  }

  // A closed handle with no name (what a forkserver argument is decoded into).
  SharedMemory() = default;
  SharedMemory(const SharedMemory&) = default;
  SharedMemory& operator=(const SharedMemory&) = default;
  SharedMemory(SharedMemory&&) noexcept = default;
  SharedMemory& operator=(SharedMemory&&) noexcept = default;
  ~SharedMemory() = default;

  // The name without the leading '/', as Python's .name.
  [[nodiscard]] const std::string& name() const { return name_; }
  [[nodiscard]] std::size_t size() const { return size_; }
  // The mapped bytes. Throws SharedMemoryError after close().
  [[nodiscard]] std::span<std::byte> buf() const;
  [[nodiscard]] bool closed() const { return !mapping_; }
  // Drops this handle's view; idempotent.
  void close() noexcept { mapping_.reset(); }
  // Removes the name (existing mappings stay valid). Throws
  // FileNotFoundError when the name is already gone.
  void unlink();

  // Only as a forkserver child's argument (see above).
  template <class Archive>
  void save(Archive& ar) const {
    ar(name_, static_cast<std::uint64_t>(size_), passed_fd());
  }
  template <class Archive>
  void load(Archive& ar) {
    std::uint64_t size = 0;
    std::uint32_t index = 0;
    ar(name_, size, index);
    arrive(static_cast<std::size_t>(size), index);
  }

 private:
  [[nodiscard]] std::uint32_t passed_fd() const;
  void arrive(std::size_t size, std::uint32_t index);
  friend detail::Placement detail::place_in(const SharedMemory&, std::size_t, std::size_t, std::size_t,
                                            const char*);
  std::string name_;
  std::size_t size_ = 0;
  std::shared_ptr<detail::SharedMapping> mapping_;
};

namespace detail {
// The POSIX object name for a user-visible name ("haha" -> "/haha"); throws
// SharedMemoryError for invalid names.
[[nodiscard]] std::string shm_object_name(const std::string& name);
}  // namespace detail

}  // namespace mpx
