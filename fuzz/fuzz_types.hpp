// The types decode_fuzz.cpp decodes, shared with the seed corpus generator.
// Selector byte: bits 0-6 pick the type (modulo kTypeCount); bit 7 set means
// "the rest is a payload: wrap it in a valid envelope with the right tag and
// checksum" (fuzzes the cereal layer), clear means "the rest is a whole
// message" (fuzzes the envelope checks).
#pragma once

#include <mpx/serialization.hpp>

#include <cstdint>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <tuple>
#include <unordered_map>
#include <variant>
#include <vector>

namespace fuzz {

struct Point {  // trivially copyable, no serialize: the raw path
  std::int64_t id;
  double x, y;
  std::uint32_t flags;
  bool operator==(const Point&) const = default;
};

struct Leaf {
  std::string name;
  std::optional<double> weight;
  bool enabled = false;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(name, weight, enabled);
  }
  bool operator==(const Leaf&) const = default;
};

struct Record {
  std::int64_t id = 0;
  std::string name;
  std::vector<std::int32_t> ids;
  std::map<std::string, std::vector<std::optional<int>>> table;
  std::set<std::int64_t> keys;
  std::vector<bool> flags;
  std::deque<std::string> lines;
  std::list<Leaf> leaves;
  std::tuple<int, double, std::string> triple;
  std::unordered_map<int, std::string> names;
  mpx::Bytes blob;
  std::variant<std::monostate, int, std::string, Leaf> choice;
  std::unique_ptr<Leaf> owned;
  std::shared_ptr<std::string> shared_a, shared_b;
  std::array<std::uint16_t, 3> small{};
  template <class Archive>
  void serialize(Archive& ar) {
    ar(id, name, ids, table, keys, flags, lines, leaves, triple, names, blob, choice, owned, shared_a, shared_b, small);
  }
};

struct Tree {
  int value = 0;
  std::vector<Tree> children;
  std::unique_ptr<Tree> next;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(value, children, next);
  }
};

using Variant = std::variant<std::monostate, std::int64_t, std::string, std::vector<int>, Leaf, std::array<std::int32_t, 2>>;
using StringMap = std::map<int, std::string>;
using Nested = std::vector<std::vector<std::string>>;
using OptionalList = std::optional<std::list<std::pair<std::string, std::int16_t>>>;

inline constexpr unsigned kTypeCount = 10;
inline constexpr std::uint8_t kWrapPayload = 0x80;

// The message to decode as T: the input itself, or (wrap) the input as the
// payload of a valid envelope with T's tag and checksum, kept in `storage`.
template <class T>
std::span<const std::byte> message_for(std::span<const std::byte> input, bool wrap, mpx::Bytes& storage) {
  if (!wrap) return input;
  storage = mpx::detail::make_envelope(mpx::type_tag<T>(), mpx::raw_encoding_v<T> ? mpx::envelope_flag_raw : 0, input);
  return storage;
}

// Calls f.template operator()<T>() for the type the selector picks.
template <class F>
void with_type(unsigned index, F&& f) {
  switch (index % kTypeCount) {
    case 0: f.template operator()<std::int64_t>(); break;
    case 1: f.template operator()<std::string>(); break;
    case 2: f.template operator()<std::vector<double>>(); break;
    case 3: f.template operator()<Record>(); break;
    case 4: f.template operator()<Variant>(); break;
    case 5: f.template operator()<StringMap>(); break;
    case 6: f.template operator()<Tree>(); break;
    case 7: f.template operator()<Point>(); break;
    case 8: f.template operator()<Nested>(); break;
    case 9: f.template operator()<OptionalList>(); break;
  }
}

}  // namespace fuzz
