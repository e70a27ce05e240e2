// mpx/detail/archive.hpp: the cereal archives behind mpx::encode / mpx::decode.
//
// Internal; users go through <mpx/serialization.hpp>. Both archives produce
// and read exactly the byte format of cereal's plain BinaryArchive (native
// little-endian, 8-byte length prefixes), without iostreams:
//  - BytesOutputArchive appends to a std::vector<std::byte>.
//  - SpanInputArchive reads a span and distrusts it. Every read is bounded by
//    the bytes left; every length prefix (cereal's SizeTag) is checked before
//    the container that follows allocates: a count may not exceed the bytes
//    left, and the counts of one message together may not exceed its payload
//    size (every element of a well-formed message takes at least one byte;
//    only containers of empty types are limited by this). Vectors of
//    arithmetic types and strings also check count * sizeof(element) against
//    the bytes left; other vectors and unordered sets reserve no more than
//    the bytes left could fill and grow as their elements actually arrive.
//    A bool byte other than 0 or 1 is refused. Nesting is limited to
//    max_nesting_depth (the decoder recurses, a hostile message must not
//    overflow the stack); the output archive refuses the same depth so that
//    nothing is encoded that cannot be decoded.
// Violations throw mpx::DecodeError (malformed_payload) resp. mpx::EncodeError
// through the out-of-line helpers below. Single-threaded objects, one per call.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_set>
#include <vector>

#include <cereal/cereal.hpp>

namespace mpx {
using Bytes = std::vector<std::byte>;
}  // namespace mpx

namespace mpx::detail {

// Nesting limit of cereal's recursion, in cereal "process" levels: a user
// struct, a container, an optional or a variant each take one or two levels.
inline constexpr std::size_t max_nesting_depth = 512;

// Out-of-line throwers (serialization.cpp), so that the inline paths stay small.
[[noreturn]] void throw_payload_short(std::string_view type, std::size_t wanted, std::size_t offset,
                                      std::size_t payload_size);
[[noreturn]] void throw_count_too_large(std::string_view type, std::uint64_t count, std::size_t element_size,
                                        std::size_t offset, std::size_t remaining);
[[noreturn]] void throw_count_over_budget(std::string_view type, std::uint64_t count, std::size_t offset,
                                          std::size_t budget_left, std::size_t payload_size);
[[noreturn]] void throw_bad_bool(std::string_view type, unsigned value, std::size_t offset);
[[noreturn]] void throw_too_deep(std::string_view type, std::size_t offset);
[[noreturn]] void throw_encode_too_deep(std::string_view type);

// Element types whose every byte pattern is a valid value: loaded by memcpy.
template <class T>
inline constexpr bool is_bitwise_loadable_v =
    (std::is_arithmetic_v<T> && !std::is_same_v<T, bool>) || std::is_same_v<T, std::byte>;

class BytesOutputArchive : public cereal::OutputArchive<BytesOutputArchive, cereal::AllowEmptyClassElision> {
 public:
  BytesOutputArchive(Bytes& out, std::string_view type_name) noexcept
      : cereal::OutputArchive<BytesOutputArchive, cereal::AllowEmptyClassElision>(this),
        out_(out),
        type_name_(type_name) {}
  BytesOutputArchive(const BytesOutputArchive&) = delete;
  BytesOutputArchive& operator=(const BytesOutputArchive&) = delete;

  void save_binary(const void* data, std::size_t size) {
    const auto* p = static_cast<const std::byte*>(data);
    out_.insert(out_.end(), p, p + size);
  }
  void enter() {
    if (++depth_ > max_nesting_depth) throw_encode_too_deep(type_name_);
  }
  void leave() noexcept { --depth_; }

 private:
  Bytes& out_;
  std::string_view type_name_;
  std::size_t depth_ = 0;
};

class SpanInputArchive : public cereal::InputArchive<SpanInputArchive, cereal::AllowEmptyClassElision> {
 public:
  SpanInputArchive(std::span<const std::byte> payload, std::string_view type_name) noexcept
      : cereal::InputArchive<SpanInputArchive, cereal::AllowEmptyClassElision>(this),
        begin_(payload.data()),
        pos_(payload.data()),
        end_(payload.data() + payload.size()),
        budget_(payload.size()),
        type_name_(type_name) {}
  SpanInputArchive(const SpanInputArchive&) = delete;
  SpanInputArchive& operator=(const SpanInputArchive&) = delete;

  void load_binary(void* data, std::size_t size) {
    if (size > remaining()) throw_payload_short(type_name_, size, consumed(), payload_size());
    if (size != 0) std::memcpy(data, pos_, size);
    pos_ += size;
  }
  // A length prefix said `count` elements follow.
  void claim_elements(std::uint64_t count) {
    if (count > remaining()) throw_count_too_large(type_name_, count, 0, consumed(), remaining());
    if (count > budget_) throw_count_over_budget(type_name_, count, consumed(), budget_, payload_size());
    budget_ -= static_cast<std::size_t>(count);
  }
  // `count` elements of `element_size` bytes each must still be in the payload.
  void require_bytes(std::uint64_t count, std::size_t element_size) const {
    if (count > remaining() / element_size)
      throw_count_too_large(type_name_, count, element_size, consumed(), remaining());
  }
  void enter() {
    if (++depth_ > max_nesting_depth) throw_too_deep(type_name_, consumed());
  }
  void leave() noexcept { --depth_; }

  [[nodiscard]] std::size_t remaining() const noexcept { return static_cast<std::size_t>(end_ - pos_); }
  [[nodiscard]] std::size_t consumed() const noexcept { return static_cast<std::size_t>(pos_ - begin_); }
  [[nodiscard]] std::size_t payload_size() const noexcept { return static_cast<std::size_t>(end_ - begin_); }
  [[nodiscard]] std::string_view type_name() const noexcept { return type_name_; }

 private:
  const std::byte* begin_;
  const std::byte* pos_;
  const std::byte* end_;
  std::size_t budget_;  // elements the remaining length prefixes may still claim
  std::size_t depth_ = 0;
  std::string_view type_name_;
};

// ---- depth accounting: cereal calls prologue/epilogue around every value.
template <class T>
void prologue(BytesOutputArchive& ar, const T&) {
  ar.enter();
}
template <class T>
void epilogue(BytesOutputArchive& ar, const T&) noexcept {
  ar.leave();
}
template <class T>
void prologue(SpanInputArchive& ar, const T&) {
  ar.enter();
}
template <class T>
void epilogue(SpanInputArchive& ar, const T&) noexcept {
  ar.leave();
}

// ---- primitives (the same bytes as cereal::BinaryOutputArchive)
template <class T>
  requires std::is_arithmetic_v<T>
void CEREAL_SAVE_FUNCTION_NAME(BytesOutputArchive& ar, const T& t) {
  ar.save_binary(std::addressof(t), sizeof(T));
}
template <class T>
  requires(std::is_arithmetic_v<T> && !std::is_same_v<T, bool>)
void CEREAL_LOAD_FUNCTION_NAME(SpanInputArchive& ar, T& t) {
  ar.load_binary(std::addressof(t), sizeof(T));
}
static_assert(sizeof(bool) == 1, "cereal's binary format stores bool as one byte");
inline void CEREAL_LOAD_FUNCTION_NAME(SpanInputArchive& ar, bool& b) {
  unsigned char c = 0;
  const std::size_t offset = ar.consumed();
  ar.load_binary(&c, 1);
  if (c > 1) throw_bad_bool(ar.type_name(), c, offset);
  b = c != 0;
}

template <class T>
void CEREAL_SAVE_FUNCTION_NAME(BytesOutputArchive& ar, const cereal::NameValuePair<T>& t) {
  ar(t.value);
}
template <class T>
void CEREAL_LOAD_FUNCTION_NAME(SpanInputArchive& ar, cereal::NameValuePair<T>& t) {
  ar(t.value);
}

template <class T>
void CEREAL_SAVE_FUNCTION_NAME(BytesOutputArchive& ar, const cereal::SizeTag<T>& t) {
  ar(t.size);
}
// Every length prefix cereal reads comes through here, before its container allocates.
template <class T>
void CEREAL_LOAD_FUNCTION_NAME(SpanInputArchive& ar, cereal::SizeTag<T>& t) {
  using Size = std::remove_cvref_t<T>;
  static_assert(std::is_integral_v<Size>, "cereal size tags are integers");
  Size size{};
  ar.load_binary(&size, sizeof size);
  if constexpr (std::is_signed_v<Size>) {
    if (size < 0) throw_count_too_large(ar.type_name(), static_cast<std::uint64_t>(size), 0, ar.consumed(), 0);
  }
  ar.claim_elements(static_cast<std::uint64_t>(size));
  t.size = size;
}

template <class T>
void CEREAL_SAVE_FUNCTION_NAME(BytesOutputArchive& ar, const cereal::BinaryData<T>& bd) {
  ar.save_binary(bd.data, static_cast<std::size_t>(bd.size));
}
template <class T>
void CEREAL_LOAD_FUNCTION_NAME(SpanInputArchive& ar, cereal::BinaryData<T>& bd) {
  ar.load_binary(bd.data, static_cast<std::size_t>(bd.size));
}

// ---- containers whose cereal load would allocate before checking.
template <class C, class Tr, class A>
void CEREAL_LOAD_FUNCTION_NAME(SpanInputArchive& ar, std::basic_string<C, Tr, A>& s) {
  cereal::size_type size = 0;
  ar(cereal::make_size_tag(size));
  ar.require_bytes(size, sizeof(C));
  s.resize(static_cast<std::size_t>(size));
  ar.load_binary(s.data(), static_cast<std::size_t>(size) * sizeof(C));
}

template <class T, class A>
  requires(!std::is_same_v<T, bool>)
void CEREAL_LOAD_FUNCTION_NAME(SpanInputArchive& ar, std::vector<T, A>& v) {
  cereal::size_type size = 0;
  ar(cereal::make_size_tag(size));
  const auto n = static_cast<std::size_t>(size);
  if constexpr (is_bitwise_loadable_v<T>) {
    ar.require_bytes(size, sizeof(T));
    v.resize(n);
    ar.load_binary(v.data(), n * sizeof(T));
  } else {
    // Reserve no more than the bytes left could fill; grow as elements arrive.
    v.clear();
    v.reserve(std::min(n, ar.remaining() / sizeof(T) + 1));
    for (std::size_t i = 0; i < n; ++i) {
      v.emplace_back();
      ar(v.back());
    }
  }
}

// cereal reserves `count` buckets up front; reserve only what the bytes left
// could fill (at least 8 bytes per element in practice) and grow as elements arrive.
template <class Set>
void load_unordered_set(SpanInputArchive& ar, Set& set) {
  cereal::size_type size = 0;
  ar(cereal::make_size_tag(size));
  set.clear();
  set.reserve(std::min(static_cast<std::size_t>(size), ar.remaining() / 8));
  for (cereal::size_type i = 0; i < size; ++i) {
    typename Set::key_type key;
    ar(key);
    set.emplace(std::move(key));
  }
}
template <class K, class H, class E, class A>
void CEREAL_LOAD_FUNCTION_NAME(SpanInputArchive& ar, std::unordered_set<K, H, E, A>& set) {
  load_unordered_set(ar, set);
}
template <class K, class H, class E, class A>
void CEREAL_LOAD_FUNCTION_NAME(SpanInputArchive& ar, std::unordered_multiset<K, H, E, A>& set) {
  load_unordered_set(ar, set);
}

// Bytes (and vectors of std::byte) as one block, as cereal does for arithmetic vectors.
template <class A>
void CEREAL_SAVE_FUNCTION_NAME(BytesOutputArchive& ar, const std::vector<std::byte, A>& v) {
  ar(cereal::make_size_tag(static_cast<cereal::size_type>(v.size())));
  ar.save_binary(v.data(), v.size());
}

}  // namespace mpx::detail

CEREAL_REGISTER_ARCHIVE(mpx::detail::BytesOutputArchive)
CEREAL_REGISTER_ARCHIVE(mpx::detail::SpanInputArchive)
CEREAL_SETUP_ARCHIVE_TRAITS(mpx::detail::SpanInputArchive, mpx::detail::BytesOutputArchive)
