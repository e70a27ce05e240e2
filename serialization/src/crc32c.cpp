// CRC-32C for the wire envelope: SSE4.2 crc32 instruction behind a cpuid
// check, slicing-by-8 tables otherwise. The hardware path runs three
// independent crc32 streams over long buffers (the instruction has a latency
// of 3 cycles but a throughput of 1 per cycle) and joins them with
// precomputed "append N zero bytes" operators, after Mark Adler's crc32c.c.
#include "mpx/detail/crc32c.hpp"

#include <array>
#include <atomic>
#include <bit>
#include <cstring>

#if defined(__x86_64__) || defined(__i386__)
#include <nmmintrin.h>
#define MPX_CRC32C_X86 1
#endif

static_assert(std::endian::native == std::endian::little, "mpx's wire format assumes a little-endian host");

namespace mpx::detail {
namespace {

constexpr std::uint32_t kPoly = 0x82F63B78u;  // CRC-32C, reflected

using Table = std::array<std::array<std::uint32_t, 256>, 8>;

// t[k][n]: the CRC register after byte n followed by k zero bytes.
constexpr Table make_slicing_tables() {
  Table t{};
  for (std::uint32_t n = 0; n < 256; ++n) {
    std::uint32_t c = n;
    for (int k = 0; k < 8; ++k) c = (c & 1u) ? (c >> 1) ^ kPoly : c >> 1;
    t[0][n] = c;
  }
  for (std::uint32_t n = 0; n < 256; ++n) {
    std::uint32_t c = t[0][n];
    for (int k = 1; k < 8; ++k) {
      c = t[0][c & 0xFFu] ^ (c >> 8);
      t[k][n] = c;
    }
  }
  return t;
}
constexpr Table kSlicing = make_slicing_tables();

inline std::uint64_t load64(const unsigned char* p) noexcept {
  std::uint64_t w;
  std::memcpy(&w, p, sizeof w);
  return w;
}

std::uint32_t portable(const unsigned char* p, std::size_t n, std::uint32_t crc) noexcept {
  crc = ~crc;
  while (n >= 8) {
    const std::uint64_t w = load64(p) ^ crc;
    crc = kSlicing[7][w & 0xFF] ^ kSlicing[6][(w >> 8) & 0xFF] ^ kSlicing[5][(w >> 16) & 0xFF] ^
          kSlicing[4][(w >> 24) & 0xFF] ^ kSlicing[3][(w >> 32) & 0xFF] ^ kSlicing[2][(w >> 40) & 0xFF] ^
          kSlicing[1][(w >> 48) & 0xFF] ^ kSlicing[0][w >> 56];
    p += 8;
    n -= 8;
  }
  while (n-- > 0) crc = kSlicing[0][(crc ^ *p++) & 0xFFu] ^ (crc >> 8);
  return ~crc;
}

#ifdef MPX_CRC32C_X86

// GF(2) 32x32 matrices, used once at compile time to build the operators
// that append 8192 resp. 256 zero bytes to a CRC register.
using Matrix = std::array<std::uint32_t, 32>;

constexpr std::uint32_t gf2_times(const Matrix& m, std::uint32_t v) {
  std::uint32_t sum = 0;
  for (int i = 0; v != 0; ++i, v >>= 1)
    if (v & 1u) sum ^= m[static_cast<std::size_t>(i)];
  return sum;
}

constexpr Matrix gf2_square(const Matrix& m) {
  Matrix s{};
  for (std::size_t i = 0; i < 32; ++i) s[i] = gf2_times(m, m[i]);
  return s;
}

// Operator for `len` zero bytes; len is a power of two.
constexpr Matrix zeros_operator(std::size_t len) {
  Matrix odd{};  // one zero bit
  odd[0] = kPoly;
  std::uint32_t row = 1;
  for (std::size_t i = 1; i < 32; ++i, row <<= 1) odd[i] = row;
  Matrix even = gf2_square(odd);  // two zero bits
  odd = gf2_square(even);         // four zero bits
  for (;;) {
    even = gf2_square(odd);  // 8, 32, 128 ... bits
    len >>= 1;
    if (len == 0) return even;
    odd = gf2_square(even);
    len >>= 1;
    if (len == 0) return odd;
  }
}

using ShiftTable = std::array<std::array<std::uint32_t, 256>, 4>;

constexpr ShiftTable make_shift_table(std::size_t len) {
  const Matrix op = zeros_operator(len);
  ShiftTable t{};
  for (std::uint32_t n = 0; n < 256; ++n) {
    t[0][n] = gf2_times(op, n);
    t[1][n] = gf2_times(op, n << 8);
    t[2][n] = gf2_times(op, n << 16);
    t[3][n] = gf2_times(op, n << 24);
  }
  return t;
}

constexpr std::size_t kLong = 8192;
constexpr std::size_t kShort = 256;
constexpr ShiftTable kShiftLong = make_shift_table(kLong);
constexpr ShiftTable kShiftShort = make_shift_table(kShort);

inline std::uint32_t shift(const ShiftTable& t, std::uint32_t crc) noexcept {
  return t[0][crc & 0xFF] ^ t[1][(crc >> 8) & 0xFF] ^ t[2][(crc >> 16) & 0xFF] ^ t[3][crc >> 24];
}

template <std::size_t Block>
__attribute__((target("sse4.2"))) inline void three_way(const unsigned char*& p, std::size_t& n,
                                                        std::uint64_t& crc0, const ShiftTable& table) noexcept {
  while (n >= 3 * Block) {
    std::uint64_t crc1 = 0, crc2 = 0;
    const unsigned char* const end = p + Block;
    do {
      crc0 = _mm_crc32_u64(crc0, load64(p));
      crc1 = _mm_crc32_u64(crc1, load64(p + Block));
      crc2 = _mm_crc32_u64(crc2, load64(p + 2 * Block));
      p += 8;
    } while (p < end);
    crc0 = shift(table, static_cast<std::uint32_t>(crc0)) ^ static_cast<std::uint32_t>(crc1);
    crc0 = shift(table, static_cast<std::uint32_t>(crc0)) ^ static_cast<std::uint32_t>(crc2);
    p += 2 * Block;
    n -= 3 * Block;
  }
}

__attribute__((target("sse4.2"))) std::uint32_t hardware(const unsigned char* p, std::size_t n,
                                                          std::uint32_t crc) noexcept {
  std::uint64_t c = ~crc;
  if (n >= 3 * kShort) {
    three_way<kLong>(p, n, c, kShiftLong);
    three_way<kShort>(p, n, c, kShiftShort);
  }
  while (n >= 8) {
    c = _mm_crc32_u64(c, load64(p));
    p += 8;
    n -= 8;
  }
  std::uint32_t c32 = static_cast<std::uint32_t>(c);
  if (n >= 4) {
    std::uint32_t w;
    std::memcpy(&w, p, 4);
    c32 = _mm_crc32_u32(c32, w);
    p += 4;
    n -= 4;
  }
  while (n-- > 0) c32 = _mm_crc32_u8(c32, *p++);
  return ~c32;
}

bool cpu_has_sse42() noexcept {
  __builtin_cpu_init();
  return __builtin_cpu_supports("sse4.2");
}
#endif  // MPX_CRC32C_X86

using Impl = std::uint32_t (*)(const unsigned char*, std::size_t, std::uint32_t) noexcept;

Impl choose() noexcept {
#ifdef MPX_CRC32C_X86
  if (cpu_has_sse42()) return &hardware;
#endif
  return &portable;
}

// Chosen at the first call (cpuid), then one indirect call per checksum.
std::uint32_t resolve(const unsigned char* p, std::size_t n, std::uint32_t crc) noexcept;
std::atomic<Impl> g_impl{&resolve};

std::uint32_t resolve(const unsigned char* p, std::size_t n, std::uint32_t crc) noexcept {
  const Impl impl = choose();
  g_impl.store(impl, std::memory_order_relaxed);
  return impl(p, n, crc);
}

}  // namespace

std::uint32_t crc32c(const void* data, std::size_t size, std::uint32_t crc) noexcept {
  return g_impl.load(std::memory_order_relaxed)(static_cast<const unsigned char*>(data), size, crc);
}

std::uint32_t crc32c_portable(const void* data, std::size_t size, std::uint32_t crc) noexcept {
  return portable(static_cast<const unsigned char*>(data), size, crc);
}

bool crc32c_is_hardware() noexcept {
#ifdef MPX_CRC32C_X86
  static const bool hw = cpu_has_sse42();
  return hw;
#else
  return false;
#endif
}

}  // namespace mpx::detail
