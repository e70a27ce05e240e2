// libFuzzer target: decode arbitrary bytes as several types. The only
// exception allowed out of mpx::decode is mpx::DecodeError; anything else
// escapes and aborts (a finding), as do sanitizer reports, huge allocations
// (-rss_limit_mb / -malloc_limit_mb) and stack overflows. A value that does
// decode must survive encode -> decode again.
// Build and run: scripts/fuzz.sh [seconds]
#include "fuzz_types.hpp"

#include <cstdlib>
#include <cstring>
#include <span>

namespace {

struct Decode {
  std::span<const std::byte> input;
  bool wrap;

  template <class T>
  void operator()() const {
    mpx::Bytes storage;
    const std::span<const std::byte> message = fuzz::message_for<T>(input, wrap, storage);
    try {
      const T value = mpx::decode<T>(message);
      // Whatever decodes must encode, and decode again to the same encoding.
      const mpx::Bytes again = mpx::encode(value);
      const T value2 = mpx::decode<T>(again);
      const mpx::Bytes again2 = mpx::encode(value2);
      if (!std::is_same_v<T, fuzz::Record> && again != again2) std::abort();  // unordered_map order may differ
    } catch (const mpx::DecodeError&) {
      // expected for almost every input
    }
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  const std::uint8_t selector = data[0];
  const Decode decode{std::span(reinterpret_cast<const std::byte*>(data) + 1, size - 1),
                      (selector & fuzz::kWrapPayload) != 0};
  fuzz::with_type(selector & 0x7F, decode);
  return 0;
}
