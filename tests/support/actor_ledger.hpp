// A ledger of numbered messages shared by a test and the hosts it forks,
// and the registered actor "ledger_keeper" that fills it: for each sequence
// number, how often it was handled and whether a handling was flagged
// redelivered. Used by the crash tests to account for every message.
#pragma once

#include <sys/mman.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <stdexcept>

#include "mpx/actors.hpp"

namespace mpx::test {

// Up to kLedgerSize messages: 2 bytes each of anonymous MAP_SHARED memory,
// mapped on first use (call ledger() before starting the hosts).
inline constexpr std::uint32_t kLedgerSize = 16'000'000;

struct Ledger {
  std::atomic<std::uint8_t> handled[kLedgerSize];
  std::atomic<std::uint8_t> flagged[kLedgerSize];
  void clear() { std::memset(static_cast<void*>(this), 0, sizeof(Ledger)); }
};

inline Ledger* ledger() {
  static Ledger* l = [] {
    void* p = ::mmap(nullptr, sizeof(Ledger), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::runtime_error("mmap failed");
    return static_cast<Ledger*>(p);
  }();
  return l;
}

struct Numbered {
  std::uint32_t seq = 0;
  template <class A>
  void serialize(A& ar) {
    ar(seq);
  }
};
struct Flush {
  template <class A>
  void serialize(A&) {}
};

inline mpx::actors::Behavior ledger_keeper(mpx::actors::Context& self) {
  return {
      [&self](const Numbered& m) {
        if (self.redelivered()) ledger()->flagged[m.seq].store(1);
        ledger()->handled[m.seq].fetch_add(1);
      },
      [](const Flush&) { return true; },
  };
}

}  // namespace mpx::test

MPX_REGISTER_ACTOR(mpx::test::ledger_keeper);
