// libFuzzer target: the manager server's request path. Arbitrary bytes are
// decoded as a Request, exactly as a connection thread does, and handled
// against an in-process server (timeouts forced to zero, so nothing blocks).
// The only exception allowed out is mpx::DecodeError (the connection would
// be closed); every other failure must come back as a Response code.
// Anything else escaping, a sanitizer report, or a huge allocation is a finding.
// Inputs are used raw, and also wrapped: the fuzzer's bytes as the args of a
// valid Request (first byte: op), so the handlers are reached too.
#include <cstdlib>
#include <span>

#include "mpx/detail/manager_protocol.hpp"
#include "server.hpp"

namespace wire = mpx::detail::manager;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::span<const std::byte> input(reinterpret_cast<const std::byte*>(data), size);
  try {
    (void)wire::handle_request_bytes(input);
  } catch (const mpx::DecodeError&) {
  }
  if (size >= 3) {
    wire::Request r;
    r.op = data[0] % 64;
    r.id = data[1] % 8;  // a few object ids exist after some creates
    r.name = "add";
    std::size_t pos = 2;
    while (pos < size) {
      const std::size_t n = std::min<std::size_t>(data[pos] % 32, size - pos - 1);
      r.args.emplace_back(input.begin() + static_cast<std::ptrdiff_t>(pos + 1),
                          input.begin() + static_cast<std::ptrdiff_t>(pos + 1 + n));
      pos += n + 1;
    }
    if (r.op == static_cast<std::uint32_t>(wire::Op::create) && !r.args.empty()) {
      // Make creates reach every kind: the first argument as a valid kind.
      r.args[0] = mpx::encode(static_cast<std::uint32_t>(data[2] % 16));
    }
    const auto bytes = mpx::encode(r);
    try {
      (void)wire::handle_request_bytes(bytes);
    } catch (const mpx::DecodeError&) {
      std::abort();  // a valid envelope of a Request must always decode
    }
  }
  return 0;
}
