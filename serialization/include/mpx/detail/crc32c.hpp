// mpx/detail/crc32c.hpp: CRC-32C (Castagnoli), the checksum of mpx's wire envelope.
//
// Contract: pure functions, callable from any thread of any process, never
// block, never throw. crc32c() uses the SSE4.2 crc32 instruction when the CPU
// has it (checked once with cpuid, at the first call) and a slicing-by-8
// table otherwise; both give the same value. The value is the standard one
// (crc32c("123456789") == 0xE3069283); pass a previous result as `crc` to
// continue over a second buffer.
#pragma once

#include <cstddef>
#include <cstdint>

namespace mpx::detail {

// The CRC-32C of `size` bytes at `data`, continuing from `crc` (0 to start).
[[nodiscard]] std::uint32_t crc32c(const void* data, std::size_t size, std::uint32_t crc = 0) noexcept;

// The portable table implementation, whatever the CPU (exposed for tests and benchmarks).
[[nodiscard]] std::uint32_t crc32c_portable(const void* data, std::size_t size, std::uint32_t crc = 0) noexcept;

// True when crc32c() runs on the SSE4.2 instruction.
[[nodiscard]] bool crc32c_is_hardware() noexcept;

}  // namespace mpx::detail
