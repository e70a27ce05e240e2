// mpx/serialization.hpp: values to bytes and back, inside a checked envelope.
//
// Contract:
//  - encode / encode_into turn any value cereal can serialize (user types with
//    a `serialize` member or save/load pair, and the standard types whose
//    cereal headers this header includes) into one self-describing message:
//    a 24-byte envelope (magic, format version, flags, payload length, type
//    tag, CRC-32C) followed by the payload. Trivially copyable, non-pointer
//    types without cereal functions of their own (int64_t, double, enums,
//    POD structs without `serialize`, std::array of them; see raw_encoding)
//    are memcpy'd and never touch cereal; strings and vectors of arithmetic
//    elements are written directly; everything else by a cereal archive.
//    Wherever cereal can write the type, the payload is exactly what cereal's
//    BinaryArchive would write. Little-endian hosts only.
//    encode_into replaces `out`'s content and reuses its capacity: it does not
//    allocate when the message fits. Throws EncodeError for a payload of 4 GiB
//    or more or a value nested deeper than the decoder accepts; exceptions of
//    the value's own save functions propagate (out's content is then unspecified).
//  - decode<T> checks the whole envelope before it reads the payload (size,
//    magic, version, type tag, claimed length against max_size and against
//    the bytes that arrived, checksum; max_size bounds the whole message,
//    envelope included, and a larger claim is refused before any
//    allocation), then decodes with every length prefix
//    bounded by the bytes left, and refuses bytes left over. Any failure,
//    including any exception cereal or the standard library raises on the
//    way, is thrown as DecodeError with its Kind and a message that says what
//    was wrong, with numbers; no half-built value is ever returned and a
//    hostile message cannot make it allocate much more than a well-formed
//    message of the same size would (see docs/serialization.md). Exceptions
//    that are not std::exception (thread cancellation) propagate unchanged.
//  - Everything is reentrant and thread-safe; the default maximum message size
//    is process-wide (an atomic).
//  - type_tag<T>() is FNV-1a 64 of the compiler's spelling of T: equal in every
//    process of the same build, different for different types (collisions are
//    2^-64 unlikely). It does not see layout changes of a type between builds.
#pragma once

#include <array>
#include <bit>
#include <chrono>
#include <complex>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>
#include <vector>

// The cereal support for the standard types, so that users need not include it.
#include <cereal/cereal.hpp>
#include <cereal/types/array.hpp>
#include <cereal/types/atomic.hpp>
#include <cereal/types/bitset.hpp>
#include <cereal/types/chrono.hpp>
#include <cereal/types/complex.hpp>
#include <cereal/types/deque.hpp>
#include <cereal/types/forward_list.hpp>
#include <cereal/types/list.hpp>
#include <cereal/types/map.hpp>
#include <cereal/types/memory.hpp>
#include <cereal/types/optional.hpp>
#include <cereal/types/queue.hpp>
#include <cereal/types/set.hpp>
#include <cereal/types/stack.hpp>
#include <cereal/types/string.hpp>
#include <cereal/types/tuple.hpp>
#include <cereal/types/unordered_map.hpp>
#include <cereal/types/unordered_set.hpp>
#include <cereal/types/utility.hpp>
#include <cereal/types/valarray.hpp>
#include <cereal/types/variant.hpp>
#include <cereal/types/vector.hpp>

#include "mpx/detail/archive.hpp"
#include "mpx/detail/crc32c.hpp"
#include "mpx/error.hpp"

static_assert(std::endian::native == std::endian::little, "mpx's wire format assumes a little-endian host");

namespace mpx {

using Bytes = std::vector<std::byte>;

// A message that cannot be decoded as the requested type.
class DecodeError : public Error {
 public:
  enum class Kind {
    truncated,            // fewer bytes arrived than the envelope header or its claimed length
    bad_magic,            // not an mpx message (or the framing is off)
    unsupported_version,  // envelope format version or flags this build does not know
    wrong_type,           // the message carries another type than the one asked for
    oversize,             // the claimed length exceeds the maximum message size
    checksum_mismatch,    // the CRC-32C does not match: corrupted in transit
    trailing_bytes,       // bytes after the message, or payload bytes the value did not consume
    malformed_payload,    // the envelope is fine but the payload is not a valid value of the type
  };
  DecodeError(Kind kind, const std::string& what) : Error(what), kind_(kind) {}
  [[nodiscard]] Kind kind() const noexcept { return kind_; }

 private:
  Kind kind_;
};

// "truncated", "bad_magic", ...
[[nodiscard]] std::string_view to_string(DecodeError::Kind kind) noexcept;

// A value that cannot be encoded (payload >= 4 GiB, nesting too deep, a cereal error).
class EncodeError : public Error {
 public:
  using Error::Error;
};

// ---- the envelope: 24 bytes, little-endian, in front of every payload.
//   offset size field
//   0      4    magic        0x5E58504D ("MPX^" in memory)
//   4      4    checksum     CRC-32C of bytes [8, 24 + payload_size)
//   8      2    version      1
//   10     2    flags        bit 0: payload is the raw object representation; other bits 0
//   12     4    payload_size bytes after the header
//   16     8    type_tag     type_tag<T>() of the encoded type
struct EnvelopeHeader {
  std::uint32_t magic;
  std::uint32_t checksum;
  std::uint16_t version;
  std::uint16_t flags;
  std::uint32_t payload_size;
  std::uint64_t type_tag;
};
static_assert(sizeof(EnvelopeHeader) == 24 && std::is_trivially_copyable_v<EnvelopeHeader>);

inline constexpr std::uint32_t envelope_magic = 0x5E58504Du;
inline constexpr std::uint16_t envelope_version = 1;
inline constexpr std::size_t envelope_header_size = sizeof(EnvelopeHeader);
inline constexpr std::uint16_t envelope_flag_raw = 0x0001;
inline constexpr std::uint16_t envelope_known_flags = envelope_flag_raw;
inline constexpr std::size_t max_payload_size = 0xFFFFFFFFu;

// Reads the header of a message whose first envelope_header_size bytes are in
// `bytes` (the rest may not have arrived yet: a framing reader learns from
// header.payload_size how much more to read). Checks size, magic, version and
// flags; throws DecodeError (truncated, bad_magic, unsupported_version).
[[nodiscard]] EnvelopeHeader read_envelope_header(std::span<const std::byte> bytes);

// The maximum size of a whole message (envelope included) that decode<T>(bytes)
// accepts. Process-wide, thread-safe; default 64 MiB.
[[nodiscard]] std::size_t default_max_message_size();
void set_default_max_message_size(std::size_t max_size);

template <class T>
struct raw_encoding;

// ---- type names and tags
namespace detail {

template <class T>
constexpr const char* pretty_function() noexcept {
  return __PRETTY_FUNCTION__;
}

// The "T = ..." part of g++'s "... [with T = int]" or clang's "... [T = int]".
constexpr std::string_view type_name_from_pretty(std::string_view pretty) noexcept {
  const std::size_t start = pretty.find("T = ");
  if (start == std::string_view::npos || pretty.empty() || pretty.back() != ']') return pretty;
  return pretty.substr(start + 4, pretty.size() - 1 - (start + 4));
}

constexpr std::uint64_t fnv1a64(std::string_view s) noexcept {
  std::uint64_t h = 0xCBF29CE484222325ull;
  for (const char c : s) {
    h ^= static_cast<unsigned char>(c);
    h *= 0x100000001B3ull;
  }
  return h;
}

template <class T>
inline constexpr std::string_view type_name_v = type_name_from_pretty(pretty_function<std::remove_cv_t<T>>());

template <class T>
inline constexpr std::uint64_t type_tag_v = fnv1a64(type_name_v<T>);

template <class T> struct is_specialization_optional : std::false_type {};
template <class T> struct is_specialization_optional<std::optional<T>> : std::true_type {};
template <class T> struct is_specialization_variant : std::false_type {};
template <class... T> struct is_specialization_variant<std::variant<T...>> : std::true_type {};
template <class T> struct is_view : std::false_type {};
template <class C, class Tr> struct is_view<std::basic_string_view<C, Tr>> : std::true_type {};
template <class T, std::size_t N> struct is_view<std::span<T, N>> : std::true_type {};

template <class T> struct is_standard_raw_class : std::false_type {};
template <class R, class P> struct is_standard_raw_class<std::chrono::duration<R, P>> : std::true_type {};
template <class C, class D> struct is_standard_raw_class<std::chrono::time_point<C, D>> : std::true_type {};
template <class F> struct is_standard_raw_class<std::complex<F>> : std::true_type {};

// A class whose author wrote cereal functions for it (serialize, save/load,
// minimal, versioned): those run, so that their checks and versioning apply.
template <class T>
inline constexpr bool has_user_cereal_functions_v =
    std::is_class_v<T> && !is_standard_raw_class<T>::value &&
    (cereal::traits::detail::count_output_serializers<T, BytesOutputArchive>::value != 0 ||
     cereal::traits::detail::count_input_serializers<T, SpanInputArchive>::value != 0);

// memcpy is a faithful encoding when the bytes are the value: trivially
// copyable and nothing that points into this process. bool, optional and
// variant are left to cereal, which checks their invalid states.
template <class T>
struct default_raw_encoding
    : std::bool_constant<std::is_trivially_copyable_v<T> && !std::is_pointer_v<T> && !std::is_member_pointer_v<T> &&
                         !std::is_null_pointer_v<T> && !std::is_array_v<T> && !std::is_same_v<T, bool> &&
                         !is_specialization_optional<T>::value && !is_specialization_variant<T>::value &&
                         !is_view<T>::value && !has_user_cereal_functions_v<T>> {};
// std::array is raw exactly when its elements are.
template <class T, std::size_t N>
struct default_raw_encoding<std::array<T, N>> : raw_encoding<T> {};

}  // namespace detail

// The compiler's name of T, e.g. "std::vector<double>" (cv-qualifiers dropped).
template <class T>
[[nodiscard]] constexpr std::string_view type_name() noexcept {
  return detail::type_name_v<T>;
}

template <class T>
[[nodiscard]] constexpr std::uint64_t type_tag() noexcept {
  return detail::type_tag_v<T>;
}

// Whether T travels as its raw bytes (memcpy) instead of through cereal: by
// default the trivially copyable types that hold no pointer, bool, optional
// or variant at top level and have no cereal functions of their own (a POD
// struct without `serialize`, int64_t, double, enums, std::array of those,
// chrono durations, complex). Specialize as std::true_type to send a POD
// struct that has a `serialize` raw anyway (faster; its bytes are then
// trusted as they arrive), or as std::false_type to force cereal.
template <class T>
struct raw_encoding : detail::default_raw_encoding<T> {};
template <class T>
inline constexpr bool raw_encoding_v = raw_encoding<std::remove_cv_t<T>>::value;

namespace detail {

// Writes the header in front of the payload already at msg[24, 24 + payload_size) and seals it.
inline void seal_envelope(std::byte* msg, std::uint32_t payload_size, std::uint64_t tag,
                          std::uint16_t flags) noexcept {
  const EnvelopeHeader h{envelope_magic, 0, envelope_version, flags, payload_size, tag};
  std::memcpy(msg, &h, sizeof h);
  const std::uint32_t crc = crc32c(msg + 8, envelope_header_size - 8 + payload_size);
  std::memcpy(msg + 4, &crc, sizeof crc);
}

// A message with this exact payload and tag (tests and fuzzing build hostile
// payloads behind a valid envelope with it).
[[nodiscard]] Bytes make_envelope(std::uint64_t tag, std::uint16_t flags, std::span<const std::byte> payload);

// Checks everything but the payload's content; returns the payload.
[[nodiscard]] std::span<const std::byte> open_envelope(std::span<const std::byte> bytes, std::uint64_t tag,
                                                       bool raw, std::size_t max_size, std::string_view type);

[[noreturn]] void throw_payload_too_large(std::size_t payload_size, std::string_view type);
[[noreturn]] void throw_raw_size_mismatch(std::size_t payload_size, std::size_t expected, std::string_view type);
[[noreturn]] void throw_unconsumed(std::size_t consumed, std::size_t payload_size, std::string_view type);
// Called from a catch (...) during decode: rethrows DecodeError and any
// non-std exception as is, turns every std::exception into a DecodeError.
[[noreturn]] void rethrow_as_decode_error(std::string_view type, std::size_t offset, std::size_t payload_size);

// Strings and vectors of arithmetic elements (or std::byte) at top level skip
// cereal's archive objects (whose set-up costs more than the copy of a small
// string) and are written directly, in the same bytes cereal would write:
// 8-byte element count, then the elements.
template <class T>
struct direct_sequence : std::false_type {};
template <class C, class Tr, class A>
struct direct_sequence<std::basic_string<C, Tr, A>> : std::bool_constant<is_bitwise_loadable_v<C>> {
  using element = C;
};
template <class E, class A>
struct direct_sequence<std::vector<E, A>> : std::bool_constant<is_bitwise_loadable_v<E>> {
  using element = E;
};

template <class T>
void encode_direct(Bytes& out, const T& value) {
  using E = typename direct_sequence<T>::element;
  const std::size_t bytes = value.size() * sizeof(E);
  if (bytes > max_payload_size - 8) throw_payload_too_large(8 + bytes, type_name<T>());
  out.resize(envelope_header_size + 8);
  const std::uint64_t count = value.size();
  std::memcpy(out.data() + envelope_header_size, &count, 8);
  const auto* p = reinterpret_cast<const std::byte*>(value.data());
  out.insert(out.end(), p, p + bytes);
  seal_envelope(out.data(), static_cast<std::uint32_t>(8 + bytes), type_tag<T>(), 0);
}

template <class T>
T decode_direct(std::span<const std::byte> payload) {
  using E = typename direct_sequence<T>::element;
  constexpr std::string_view name = type_name<T>();
  std::uint64_t count = 0;
  if (payload.size() < 8) throw_payload_short(name, 8, 0, payload.size());
  std::memcpy(&count, payload.data(), 8);
  const std::size_t left = payload.size() - 8;
  if (count > left / sizeof(E)) throw_count_too_large(name, count, sizeof(E), 8, left);
  const auto n = static_cast<std::size_t>(count);
  if (n * sizeof(E) != left) throw_unconsumed(8 + n * sizeof(E), payload.size(), name);
  T value;
  try {
    value.resize(n);
  } catch (...) {
    rethrow_as_decode_error(name, 8, payload.size());
  }
  if (n != 0) std::memcpy(value.data(), payload.data() + 8, n * sizeof(E));
  return value;
}

// A first guess of the encoded size, to allocate once for the common cases.
template <class T>
std::size_t payload_size_hint(const T&) noexcept {
  return 64;
}
template <class C, class Tr, class A>
std::size_t payload_size_hint(const std::basic_string<C, Tr, A>& s) noexcept {
  return 8 + s.size() * sizeof(C);
}
template <class T, class A>
std::size_t payload_size_hint(const std::vector<T, A>& v) noexcept {
  if constexpr (std::is_arithmetic_v<T> || std::is_same_v<T, std::byte>)
    return 8 + v.size() * sizeof(T);
  else
    return 8 + v.size() * 16;
}

}  // namespace detail

template <class T>
void encode_into(Bytes& out, const T& value) {
  constexpr std::uint64_t tag = type_tag<T>();
  if constexpr (raw_encoding_v<T>) {
    static_assert(sizeof(T) <= max_payload_size);
    out.resize(envelope_header_size + sizeof(T));
    std::memcpy(out.data() + envelope_header_size, static_cast<const void*>(std::addressof(value)), sizeof(T));
    detail::seal_envelope(out.data(), static_cast<std::uint32_t>(sizeof(T)), tag, envelope_flag_raw);
  } else if constexpr (detail::direct_sequence<T>::value) {
    detail::encode_direct(out, value);
  } else {
    out.resize(envelope_header_size);
    {
      detail::BytesOutputArchive ar(out, type_name<T>());
      try {
        ar(value);
      } catch (const cereal::Exception& e) {
        throw EncodeError("mpx::encode<" + std::string(type_name<T>()) + ">: cereal: " + e.what());
      }
    }
    const std::size_t payload = out.size() - envelope_header_size;
    if (payload > max_payload_size) detail::throw_payload_too_large(payload, type_name<T>());
    detail::seal_envelope(out.data(), static_cast<std::uint32_t>(payload), tag, 0);
  }
}

template <class T>
[[nodiscard]] Bytes encode(const T& value) {
  Bytes out;
  if constexpr (raw_encoding_v<T>)
    out.reserve(envelope_header_size + sizeof(T));
  else
    out.reserve(envelope_header_size + detail::payload_size_hint(value));
  encode_into(out, value);
  return out;
}

template <class T>
[[nodiscard]] T decode(std::span<const std::byte> bytes, std::size_t max_size) {
  static_assert(!std::is_reference_v<T> && !std::is_array_v<T>, "decode<T> returns a value");
  static_assert(std::is_same_v<T, std::remove_cv_t<T>>, "decode<T>: T without const/volatile");
  constexpr std::string_view name = type_name<T>();
  const std::span<const std::byte> payload = detail::open_envelope(bytes, type_tag<T>(), raw_encoding_v<T>, max_size, name);
  if constexpr (raw_encoding_v<T>) {
    if (payload.size() != sizeof(T)) detail::throw_raw_size_mismatch(payload.size(), sizeof(T), name);
    if constexpr (std::is_default_constructible_v<T>) {
      T value;
      std::memcpy(static_cast<void*>(std::addressof(value)), payload.data(), sizeof(T));
      return value;
    } else {
      std::array<std::byte, sizeof(T)> raw;
      std::memcpy(raw.data(), payload.data(), sizeof(T));
      return std::bit_cast<T>(raw);
    }
  } else if constexpr (detail::direct_sequence<T>::value) {
    return detail::decode_direct<T>(payload);
  } else {
    static_assert(std::is_default_constructible_v<T>,
                  "decode<T> builds T default-constructed, then loads it: T needs a default constructor");
    T value{};
    detail::SpanInputArchive ar(payload, name);
    try {
      ar(value);
    } catch (...) {
      detail::rethrow_as_decode_error(name, ar.consumed(), payload.size());
    }
    if (ar.remaining() != 0) detail::throw_unconsumed(ar.consumed(), payload.size(), name);
    return value;
  }
}

template <class T>
[[nodiscard]] T decode(std::span<const std::byte> bytes) {
  return decode<T>(bytes, default_max_message_size());
}

}  // namespace mpx
