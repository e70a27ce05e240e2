#include "mpx/shareable_list.hpp"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <limits>
#include <type_traits>

namespace mpx {

namespace {

constexpr std::size_t kAlign = 8;
// Python's _back_transforms_mapping codes.
constexpr std::int8_t kCodeValue = 0, kCodeStr = 1, kCodeBytes = 2, kCodeNone = 3;
constexpr const char* kFormatBool = "xxxxxxx?";  // the bool in the slot's last byte
constexpr const char* kFormatNone = "xxxxxx?x";  // a False in byte 6: None

std::int64_t read_i64(std::span<const std::byte> buf, std::size_t at) {
  std::int64_t v;
  std::memcpy(&v, buf.data() + at, sizeof v);
  return v;
}

void write_i64(std::span<std::byte> buf, std::size_t at, std::int64_t v) { std::memcpy(buf.data() + at, &v, sizeof v); }

std::string_view text_of(const ShareableList::Item& item) {
  if (auto* s = std::get_if<std::string>(&item)) return *s;
  const auto& b = std::get<Bytes>(item);
  return {reinterpret_cast<const char*>(b.data()), b.size()};
}

bool is_text(const ShareableList::Item& item) {
  return std::holds_alternative<std::string>(item) || std::holds_alternative<Bytes>(item);
}

// The "%ds" format of a string slot of `n` bytes; at most 8 characters.
std::string string_format(std::size_t n) {
  std::string f = std::to_string(n) + "s";
  if (f.size() > 8) {
    throw SharedMemoryError("ShareableList: a string or bytes item of " + std::to_string(n) +
                            " bytes does not fit an 8-character struct format");
  }
  return f;
}

// The format and code of a non-text item.
std::pair<const char*, std::int8_t> scalar_format(const ShareableList::Item& item) {
  switch (item.index()) {
    case 0: return {kFormatNone, kCodeNone};
    case 1: return {"q", kCodeValue};
    case 2: return {"d", kCodeValue};
    case 3: return {kFormatBool, kCodeValue};
    default: throw SharedMemoryError("ShareableList: not a scalar item");  // unreachable: callers check
  }
}

// Writes a non-text item into its 8-byte slot as struct.pack_into would.
void pack_scalar(std::span<std::byte> slot, const ShareableList::Item& item) {
  std::fill(slot.begin(), slot.begin() + 8, std::byte{0});  // pad bytes are NULs; None packs False
  if (auto* i = std::get_if<std::int64_t>(&item)) std::memcpy(slot.data(), i, 8);
  else if (auto* d = std::get_if<double>(&item)) std::memcpy(slot.data(), d, 8);
  else if (auto* b = std::get_if<bool>(&item)) slot[7] = std::byte{*b ? std::uint8_t{1} : std::uint8_t{0}};
}

void write_format(std::span<std::byte> buf, std::size_t at, const std::string& format) {
  std::memset(buf.data() + at, 0, 8);
  std::memcpy(buf.data() + at, format.data(), format.size());
}

// The n of a "<n>s" format, or nullopt for another format.
std::optional<std::size_t> string_length(const std::string& format) {
  if (format.size() < 2 || format.back() != 's') return std::nullopt;
  std::size_t n = 0;
  auto [end, ec] = std::from_chars(format.data(), format.data() + format.size() - 1, n);
  if (ec != std::errc() || end != format.data() + format.size() - 1) return std::nullopt;
  return n;
}

std::optional<double> numeric(const ShareableList::Item& item) {
  if (auto* i = std::get_if<std::int64_t>(&item)) return static_cast<double>(*i);
  if (auto* d = std::get_if<double>(&item)) return *d;
  if (auto* b = std::get_if<bool>(&item)) return *b ? 1.0 : 0.0;
  return std::nullopt;
}

// A new segment holding `items` in Python's layout (see the header).
SharedMemory make_segment(const std::vector<ShareableList::Item>& items, std::optional<std::string> name,
                          SharedMemory::Lifetime lifetime) {
  const std::size_t n = items.size();
  std::vector<std::string> formats;
  std::vector<std::size_t> offsets{0};
  for (const auto& item : items) {
    std::size_t slot = kAlign;
    if (is_text(item)) {
      slot = kAlign * (text_of(item).size() / kAlign + 1);  // Python's: always room for a NUL
      formats.push_back(string_format(slot));
    } else {
      formats.emplace_back(scalar_format(item).first);
    }
    offsets.push_back(offsets.back() + slot);
  }
  // struct.calcsize("q" + "q"*(N+1) + formats + "8s"*N + "b"*N): every part is 8-aligned.
  const std::size_t data = 8 * (n + 2), formats_at = data + offsets.back(), codes_at = formats_at + 8 * n;
  SharedMemory shm(std::move(name), true, static_cast<std::int64_t>(codes_at + n), lifetime);

  auto buf = shm.buf();  // zero-filled: string slots are NUL-padded already
  write_i64(buf, 0, static_cast<std::int64_t>(n));
  for (std::size_t i = 0; i <= n; ++i) write_i64(buf, 8 * (i + 1), static_cast<std::int64_t>(offsets[i]));
  for (std::size_t i = 0; i < n; ++i) {
    auto slot = buf.subspan(data + offsets[i], offsets[i + 1] - offsets[i]);
    std::int8_t code;
    if (is_text(items[i])) {
      auto text = text_of(items[i]);
      std::memcpy(slot.data(), text.data(), text.size());
      code = std::holds_alternative<std::string>(items[i]) ? kCodeStr : kCodeBytes;
    } else {
      pack_scalar(slot, items[i]);
      code = scalar_format(items[i]).second;
    }
    write_format(buf, formats_at + 8 * i, formats[i]);
    buf[codes_at + i] = static_cast<std::byte>(code);
  }
  return shm;
}

}  // namespace

ShareableList::ShareableList(const std::vector<Item>& items, std::optional<std::string> name,
                             SharedMemory::Lifetime lifetime)
    : ShareableList(Attached{}, make_segment(items, std::move(name), lifetime)) {}

ShareableList ShareableList::attach(const std::string& name) { return ShareableList(Attached{}, SharedMemory(name)); }

ShareableList::ShareableList(Attached, SharedMemory shm) : shm_(std::move(shm)) {
  auto buf = shm_.buf();
  auto bad = [&](const std::string& why) {
    return SharedMemoryError("segment '" + shm_.name() + "' is not a ShareableList: " + why);
  };
  if (buf.size() < 16) throw bad("smaller than 16 bytes");
  std::int64_t n = read_i64(buf, 0);
  // Each item needs at least 8 + 8 + 8 + 1 bytes: bounds n before any multiplication.
  if (n < 0 || static_cast<std::uint64_t>(n) > buf.size() / 25) throw bad("item count " + std::to_string(n));
  auto count = static_cast<std::size_t>(n);
  offsets_.resize(count + 1);
  for (std::size_t i = 0; i <= count; ++i) {
    std::int64_t off = read_i64(buf, 8 * (i + 1));
    if (off < 0 || static_cast<std::uint64_t>(off) > buf.size() || (i == 0 ? off != 0 : off < static_cast<std::int64_t>(offsets_[i - 1])) ||
        (i > 0 && off - static_cast<std::int64_t>(offsets_[i - 1]) < static_cast<std::int64_t>(kAlign))) {
      throw bad("slot offset " + std::to_string(i) + " is " + std::to_string(off));
    }
    offsets_[i] = static_cast<std::size_t>(off);
  }
  if (codes_start() + count > buf.size()) throw bad("its items overrun the segment");
}

void ShareableList::check_index(std::size_t index) const {
  if (index >= size()) {
    throw SharedMemoryError("ShareableList index " + std::to_string(index) + " out of range (size " +
                            std::to_string(size()) + ")");
  }
}

std::string ShareableList::format_at(std::size_t index) const {
  auto buf = shm_.buf();
  const char* at = reinterpret_cast<const char*>(buf.data() + formats_start() + 8 * index);
  std::string format(at, 8);
  format.erase(std::find(format.begin(), format.end(), '\0'), format.end());  // Python rstrips NULs
  return format;
}

ShareableList::Item ShareableList::get(std::size_t index) const {
  check_index(index);
  auto buf = shm_.buf();
  auto slot = buf.subspan(data_start() + offsets_[index], offsets_[index + 1] - offsets_[index]);
  auto code = static_cast<std::int8_t>(buf[codes_start() + index]);
  if (code == kCodeNone) return std::monostate{};
  std::string format = format_at(index);
  if (auto n = string_length(format)) {
    if (*n > slot.size()) {
      throw SharedMemoryError("ShareableList item " + std::to_string(index) + ": format '" + format +
                              "' is larger than its slot");
    }
    std::size_t len = *n;
    if (code == kCodeStr || code == kCodeBytes) {  // Python rstrips the NUL padding
      while (len > 0 && slot[len - 1] == std::byte{0}) --len;
    }
    if (code == kCodeStr) return std::string(reinterpret_cast<const char*>(slot.data()), len);
    return Bytes(slot.begin(), slot.begin() + static_cast<std::ptrdiff_t>(len));
  }
  if (format == "q") return read_i64(buf, data_start() + offsets_[index]);
  if (format == "d") {
    double d;
    std::memcpy(&d, slot.data(), sizeof d);
    return d;
  }
  if (format == kFormatBool) return slot[7] != std::byte{0};
  if (format == kFormatNone) return std::monostate{};
  throw SharedMemoryError("ShareableList item " + std::to_string(index) + ": unknown struct format '" + format + "'");
}

void ShareableList::set(std::size_t index, const Item& value) {
  check_index(index);
  auto buf = shm_.buf();
  auto slot = buf.subspan(data_start() + offsets_[index], offsets_[index + 1] - offsets_[index]);
  std::string format;
  std::int8_t code;
  if (is_text(value)) {
    auto text = text_of(value);
    if (text.size() > slot.size()) {
      throw SharedMemoryError("ShareableList item " + std::to_string(index) + ": " + std::to_string(text.size()) +
                              " bytes exceed the slot's " + std::to_string(slot.size()));
    }
    // As Python: a string slot keeps its format, another gets "<slot size>s".
    format = format_at(index);
    auto n = string_length(format);
    if (!n || *n > slot.size()) {
      format = string_format(slot.size());
      n = slot.size();
    }
    if (text.size() > *n) {
      throw SharedMemoryError("ShareableList item " + std::to_string(index) + ": " + std::to_string(text.size()) +
                              " bytes exceed its format '" + format + "'");
    }
    code = std::holds_alternative<std::string>(value) ? kCodeStr : kCodeBytes;
    write_format(buf, formats_start() + 8 * index, format);
    buf[codes_start() + index] = static_cast<std::byte>(code);
    std::memcpy(slot.data(), text.data(), text.size());
    std::fill(slot.begin() + static_cast<std::ptrdiff_t>(text.size()), slot.begin() + static_cast<std::ptrdiff_t>(*n),
              std::byte{0});
    return;
  }
  auto [scalar, scalar_code] = scalar_format(value);
  write_format(buf, formats_start() + 8 * index, scalar);
  buf[codes_start() + index] = static_cast<std::byte>(scalar_code);
  pack_scalar(slot, value);
}

std::vector<ShareableList::Item> ShareableList::to_vector() const {
  std::vector<Item> items;
  items.reserve(size());
  for (std::size_t i = 0; i < size(); ++i) items.push_back(get(i));
  return items;
}

bool ShareableList::items_equal(const Item& a, const Item& b) {
  auto x = numeric(a), y = numeric(b);
  if (x || y) {
    if (!x || !y) return false;
    // Python compares int with int exactly (no rounding through double).
    auto* i = std::get_if<std::int64_t>(&a);
    auto* j = std::get_if<std::int64_t>(&b);
    if (i && j) return *i == *j;
    return *x == *y;
  }
  return a == b;  // None, str, bytes: same kind and value
}

std::size_t ShareableList::count(const Item& value) const {
  std::size_t n = 0;
  for (std::size_t i = 0; i < size(); ++i) n += items_equal(get(i), value) ? 1 : 0;
  return n;
}

std::size_t ShareableList::index(const Item& value) const {
  for (std::size_t i = 0; i < size(); ++i) {
    if (items_equal(get(i), value)) return i;
  }
  throw SharedMemoryError("value not in ShareableList '" + name() + "'");
}

std::string ShareableList::format() const {
  std::string all;
  for (std::size_t i = 0; i < size(); ++i) all += format_at(i);
  return all;
}

}  // namespace mpx
