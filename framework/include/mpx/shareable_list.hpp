// mpx/shareable_list.hpp: ShareableList, as
// multiprocessing.shared_memory.ShareableList: a fixed-length list of
// int64, double, bool, string, bytes and None in a named SharedMemory.
//
//     mpx::ShareableList sl({42, 2.5, true, "text", mpx::Bytes{}, std::monostate{}}, "my_list");
//     sl.set(0, 43);                              // any kind into any slot ...
//     sl.set(3, "longer?");                       // ... strings up to the slot's size
//     auto other = mpx::ShareableList::attach("my_list");   // any process
//     std::get<std::int64_t>(other.get(0));        // 43
//     # Python: ShareableList(name="my_list")[0] == 43
//
// Contract
// - Python's exact memory layout (CPython 3.8-3.13, native little-endian):
//   an int64 N; N+1 int64 offsets of the slots in the data area; the data
//   area (8 bytes per number, bool or None; 8*(len/8+1) bytes per string or
//   bytes, len its encoded size); N 8-byte struct formats ("q", "d",
//   "xxxxxxx?", "xxxxxx?x", "<n>s"); N one-byte codes (0 number or bool,
//   1 str, 2 bytes, 3 None). So Python's ShareableList(name=...) reads what
//   mpx writes and mpx reads what Python writes, item by item.
// - Items: std::monostate is None, std::string is str (UTF-8, as Python
//   encodes it), Bytes is bytes. As in Python, trailing NUL bytes of a
//   string or bytes item are lost (the slot is NUL-padded), and a slot keeps
//   the size it was made with: set() may store any number, bool or None in
//   any slot, and a string or bytes up to the slot's size (SharedMemoryError
//   beyond it; Python: ValueError). A string longer than 9999999 bytes
//   cannot be described by an 8-byte format: SharedMemoryError.
// - Python sizes a str slot by its characters, mpx by its UTF-8 bytes (so a
//   non-ASCII string is never cut, which Python's struct packing does).
// - No locking, as Python's: concurrent set() of one item races; use a Lock.
// - Lifetime: the segment is a SharedMemory (mpx/shared_memory.hpp) and
//   follows its rules: made by mpx with Lifetime::tracked (the default) it is
//   unlinked when no holder remains; attached, never unlinked by mpx.
//   Python 3.8-3.12 register a segment they attach to with their resource
//   tracker, which unlinks it when that Python exits (3.13: track=False
//   avoids it).
// - Errors (all SharedMemoryError or its subclasses): index out of range,
//   a string too long for its slot, a segment that is not a ShareableList
//   (too small, offsets outside it, an unknown format), and what SharedMemory
//   throws (FileExistsError, FileNotFoundError).
// - Handles are copies of a SharedMemory handle: copies share the mapping.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "mpx/serialization.hpp"
#include "mpx/shared_memory.hpp"

namespace mpx {

class ShareableList {
 public:
  // None, int, float, bool, str, bytes.
  using Item = std::variant<std::monostate, std::int64_t, double, bool, std::string, Bytes>;

  // A new segment (no name: a fresh unique one) holding `items`.
  explicit ShareableList(const std::vector<Item>& items, std::optional<std::string> name = std::nullopt,
                         SharedMemory::Lifetime lifetime = SharedMemory::Lifetime::tracked);
  // Python's ShareableList(name=name): the list already in segment `name`.
  [[nodiscard]] static ShareableList attach(const std::string& name);

  // N, fixed at creation.
  [[nodiscard]] std::size_t size() const noexcept { return offsets_.size() - 1; }
  [[nodiscard]] Item get(std::size_t index) const;
  [[nodiscard]] Item operator[](std::size_t index) const { return get(index); }
  void set(std::size_t index, const Item& value);
  [[nodiscard]] std::vector<Item> to_vector() const;

  // Python's count/index, with Python's equality: numbers and bools compare
  // by value (1 == 1.0 == true), str never equals bytes, None only None.
  [[nodiscard]] std::size_t count(const Item& value) const;
  // SharedMemoryError when absent (Python: ValueError).
  [[nodiscard]] std::size_t index(const Item& value) const;
  // The struct formats of all items, concatenated (Python's .format).
  [[nodiscard]] std::string format() const;

  [[nodiscard]] const std::string& name() const { return shm_.name(); }
  [[nodiscard]] const SharedMemory& shm() const noexcept { return shm_; }
  [[nodiscard]] SharedMemory& shm() noexcept { return shm_; }

  // Python's equality of two items (used by count and index).
  [[nodiscard]] static bool items_equal(const Item& a, const Item& b);

 private:
  struct Attached {};
  ShareableList(Attached, SharedMemory shm);
  [[nodiscard]] std::string format_at(std::size_t index) const;
  [[nodiscard]] std::size_t data_start() const noexcept { return (size() + 2) * 8; }
  [[nodiscard]] std::size_t formats_start() const noexcept { return data_start() + offsets_.back(); }
  [[nodiscard]] std::size_t codes_start() const noexcept { return formats_start() + size() * 8; }
  void check_index(std::size_t index) const;

  SharedMemory shm_;
  std::vector<std::size_t> offsets_;  // N + 1 slot offsets in the data area (fixed: read once)
};

}  // namespace mpx
