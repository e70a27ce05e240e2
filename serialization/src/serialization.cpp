// The non-template half of mpx::encode / mpx::decode: envelope checks, the
// process-wide size limit, and the error messages (kept out of line so that
// the inline hot paths stay small).
#include "mpx/serialization.hpp"

#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cxxabi.h>
#include <exception>
#include <new>
#include <typeinfo>

namespace mpx {
namespace {

std::atomic<std::size_t> g_default_max_message_size{std::size_t{64} << 20};

std::string hex(std::uint64_t v, int digits) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "0x%0*" PRIx64, digits, v);
  return buf;
}

std::string demangled(const std::type_info& type) {
  int status = 0;
  char* name = abi::__cxa_demangle(type.name(), nullptr, nullptr, &status);
  std::string result = (status == 0 && name != nullptr) ? name : type.name();
  std::free(name);
  return result;
}

std::string num(std::uint64_t v) { return std::to_string(v); }

// An empty type name marks read_envelope_header, which decodes no type.
std::string prefix(std::string_view type) {
  return type.empty() ? std::string("mpx::read_envelope_header: ") : "mpx::decode<" + std::string(type) + ">: ";
}

[[noreturn]] void fail(DecodeError::Kind kind, std::string_view type, const std::string& message) {
  throw DecodeError(kind, prefix(type) + std::string(to_string(kind)) + ": " + message);
}

EnvelopeHeader load_header(std::span<const std::byte> bytes) noexcept {
  EnvelopeHeader h;
  std::memcpy(&h, bytes.data(), sizeof h);
  return h;
}

// Size, magic, version and flags: what read_envelope_header and open_envelope share.
EnvelopeHeader check_header(std::span<const std::byte> bytes, std::string_view type) {
  if (bytes.size() < envelope_header_size)
    fail(DecodeError::Kind::truncated, type,
         num(bytes.size()) + " bytes arrived, the envelope header alone is " + num(envelope_header_size) + " bytes");
  const EnvelopeHeader h = load_header(bytes);
  if (h.magic != envelope_magic)
    fail(DecodeError::Kind::bad_magic, type,
         "first 4 bytes are " + hex(h.magic, 8) + ", an mpx message starts with " + hex(envelope_magic, 8) +
             " (not an mpx message, or the framing is off)");
  if (h.version != envelope_version)
    fail(DecodeError::Kind::unsupported_version, type,
         "envelope format version " + num(h.version) + ", this build reads version " + num(envelope_version));
  if ((h.flags & ~envelope_known_flags) != 0)
    fail(DecodeError::Kind::unsupported_version, type,
         "envelope flags " + hex(h.flags, 4) + " include bits this build does not know (it knows " +
             hex(envelope_known_flags, 4) + ")");
  return h;
}

}  // namespace

std::string_view to_string(DecodeError::Kind kind) noexcept {
  switch (kind) {
    case DecodeError::Kind::truncated: return "truncated";
    case DecodeError::Kind::bad_magic: return "bad_magic";
    case DecodeError::Kind::unsupported_version: return "unsupported_version";
    case DecodeError::Kind::wrong_type: return "wrong_type";
    case DecodeError::Kind::oversize: return "oversize";
    case DecodeError::Kind::checksum_mismatch: return "checksum_mismatch";
    case DecodeError::Kind::trailing_bytes: return "trailing_bytes";
    case DecodeError::Kind::malformed_payload: return "malformed_payload";
  }
  return "unknown";
}

std::size_t default_max_message_size() { return g_default_max_message_size.load(std::memory_order_relaxed); }

void set_default_max_message_size(std::size_t max_size) {
  g_default_max_message_size.store(max_size, std::memory_order_relaxed);
}

EnvelopeHeader read_envelope_header(std::span<const std::byte> bytes) {
  return check_header(bytes, {});
}

namespace detail {

Bytes make_envelope(std::uint64_t tag, std::uint16_t flags, std::span<const std::byte> payload) {
  if (payload.size() > max_payload_size) throw_payload_too_large(payload.size(), "(make_envelope)");
  Bytes out(envelope_header_size + payload.size());
  if (!payload.empty()) std::memcpy(out.data() + envelope_header_size, payload.data(), payload.size());
  seal_envelope(out.data(), static_cast<std::uint32_t>(payload.size()), tag, flags);
  return out;
}

std::span<const std::byte> open_envelope(std::span<const std::byte> bytes, std::uint64_t tag, bool raw,
                                         std::size_t max_size, std::string_view type) {
  const EnvelopeHeader h = check_header(bytes, type);
  if (h.type_tag != tag)
    fail(DecodeError::Kind::wrong_type, type,
         "the message carries type tag " + hex(h.type_tag, 16) + ", " + std::string(type) + " has tag " +
             hex(tag, 16));
  const std::uint64_t total = envelope_header_size + std::uint64_t{h.payload_size};
  if (total > max_size)
    fail(DecodeError::Kind::oversize, type,
         "the envelope claims a payload of " + num(h.payload_size) + " bytes (" + num(total) +
             " with the envelope), the limit is " + num(max_size) + " bytes");
  if (total > bytes.size())
    fail(DecodeError::Kind::truncated, type,
         "the envelope claims " + num(total) + " bytes (payload " + num(h.payload_size) + "), only " +
             num(bytes.size()) + " arrived");
  if (total < bytes.size())
    fail(DecodeError::Kind::trailing_bytes, type,
         num(bytes.size() - total) + " bytes after the end of the message (the envelope claims " + num(total) +
             " bytes, " + num(bytes.size()) + " arrived)");
  const std::uint32_t crc = crc32c(bytes.data() + 8, static_cast<std::size_t>(total) - 8);
  if (crc != h.checksum)
    fail(DecodeError::Kind::checksum_mismatch, type,
         "CRC-32C of bytes 8.." + num(total) + " is " + hex(crc, 8) + ", the envelope says " + hex(h.checksum, 8) +
             " (corrupted in transit)");
  const bool message_raw = (h.flags & envelope_flag_raw) != 0;
  if (message_raw != raw)
    fail(DecodeError::Kind::malformed_payload, type,
         std::string("the envelope says the payload is ") + (message_raw ? "raw bytes" : "a cereal stream") +
             " but this build encodes " + std::string(type) + (raw ? " as raw bytes" : " with cereal"));
  return bytes.subspan(envelope_header_size, h.payload_size);
}

void throw_payload_too_large(std::size_t payload_size, std::string_view type) {
  throw EncodeError("mpx::encode<" + std::string(type) + ">: payload of " + num(payload_size) +
                    " bytes; a message carries at most " + num(max_payload_size) + " bytes");
}

void throw_encode_too_deep(std::string_view type) {
  throw EncodeError("mpx::encode<" + std::string(type) + ">: value nested deeper than " + num(max_nesting_depth) +
                    " levels, which decode would refuse");
}

void throw_raw_size_mismatch(std::size_t payload_size, std::size_t expected, std::string_view type) {
  if (payload_size > expected)
    fail(DecodeError::Kind::trailing_bytes, type,
         "raw payload of " + num(payload_size) + " bytes, " + std::string(type) + " takes " + num(expected) + "; " +
             num(payload_size - expected) + " bytes left over");
  fail(DecodeError::Kind::malformed_payload, type,
       "raw payload of " + num(payload_size) + " bytes, " + std::string(type) + " needs " + num(expected));
}

void throw_unconsumed(std::size_t consumed, std::size_t payload_size, std::string_view type) {
  fail(DecodeError::Kind::trailing_bytes, type,
       "the value ends after " + num(consumed) + " of the " + num(payload_size) + " payload bytes; " +
           num(payload_size - consumed) + " bytes left over");
}

void throw_payload_short(std::string_view type, std::size_t wanted, std::size_t offset, std::size_t payload_size) {
  fail(DecodeError::Kind::malformed_payload, type,
       "the payload ends early: " + num(wanted) + " more bytes wanted at payload offset " + num(offset) + ", only " +
           num(payload_size - offset) + " left (payload " + num(payload_size) + " bytes)");
}

void throw_count_too_large(std::string_view type, std::uint64_t count, std::size_t element_size, std::size_t offset,
                           std::size_t remaining) {
  std::string what = "the length prefix before payload offset " + num(offset) + " claims " + num(count) +
                     " elements";
  if (element_size > 1) what += " of " + num(element_size) + " bytes";
  fail(DecodeError::Kind::malformed_payload, type, what + ", only " + num(remaining) + " payload bytes remain");
}

void throw_count_over_budget(std::string_view type, std::uint64_t count, std::size_t offset, std::size_t budget_left,
                             std::size_t payload_size) {
  fail(DecodeError::Kind::malformed_payload, type,
       "the length prefix before payload offset " + num(offset) + " claims " + num(count) +
           " elements; with the elements claimed before it, that is more than the " + num(payload_size) +
           " payload bytes can hold (room for " + num(budget_left) + " more)");
}

void throw_bad_bool(std::string_view type, unsigned value, std::size_t offset) {
  fail(DecodeError::Kind::malformed_payload, type,
       "byte " + hex(value, 2) + " at payload offset " + num(offset) + " is not a bool (0 or 1)");
}

void throw_too_deep(std::string_view type, std::size_t offset) {
  fail(DecodeError::Kind::malformed_payload, type,
       "nesting deeper than " + num(max_nesting_depth) + " levels at payload offset " + num(offset));
}

void rethrow_as_decode_error(std::string_view type, std::size_t offset, std::size_t payload_size) {
  const std::string where = " (at payload offset " + num(offset) + " of " + num(payload_size) + ")";
  try {
    throw;
  } catch (const DecodeError&) {
    throw;
  } catch (const cereal::Exception& e) {
    fail(DecodeError::Kind::malformed_payload, type, std::string("cereal: ") + e.what() + where);
  } catch (const std::bad_alloc&) {
    fail(DecodeError::Kind::malformed_payload, type, std::string("out of memory (std::bad_alloc)") + where);
  } catch (const std::exception& e) {
    fail(DecodeError::Kind::malformed_payload, type, demangled(typeid(e)) + ": " + e.what() + where);
  }
  // Anything else (not a std::exception, e.g. thread cancellation) propagated from `throw;` above.
  std::terminate();  // unreachable
}

}  // namespace detail
}  // namespace mpx
