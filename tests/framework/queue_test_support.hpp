// Helpers for the queue and pipe suites (the child and the signal are the
// shared ones of tests/support/child_process.hpp), and for the ring suites:
// a message in and out of a ring, and stopping a child at one of the ring's
// test hooks to SIGKILL it there.
#pragma once

#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "child_process.hpp"
#include "mpx/detail/ring.hpp"

namespace mpx::test {

// The queue suites' name for the shared test child (child_process.hpp).
using ForkedChild = Child;

// The ring's next message, or nullopt if none came by `d` (or none was
// there, with block false).
inline std::optional<std::vector<std::byte>> take(
    detail::Ring& r, detail::Deadline d = detail::Deadline::after(std::chrono::seconds(5)), bool block = true) {
  std::optional<std::vector<std::byte>> out;
  auto sink = [&](std::span<const std::byte> b) { out.emplace(b.begin(), b.end()); };
  if (!r.get(detail::ByteSink(sink), d, block)) return std::nullopt;
  return out;
}

// Puts `m` on the ring; false if it found no room by `d`.
inline bool give(detail::Ring& r, const std::vector<std::byte>& m,
                 detail::Deadline d = detail::Deadline::after(std::chrono::seconds(5)), bool block = true) {
  return r.put(m, d, block);
}

// What notify_and_hang() notifies. A ring test hook is a plain function
// pointer, so the signal it reaches is a global; set it before the fork.
inline Signal* hang_signal = nullptr;

// For a ring test hook: tells hang_signal that the child got there, then
// hangs there until it is killed.
inline void notify_and_hang() {
  hang_signal->notify();
  for (;;) ::pause();
}

// Starts a child that sets `hook` and runs `action`, and returns once the
// child has reached the hook and hangs there (nullptr if it never did), so
// the test can kill it at exactly that point.
inline std::unique_ptr<ForkedChild> stopped_at(void (*&hook)(), const std::function<void()>& action) {
  Signal reached;
  hang_signal = &reached;
  auto child = std::make_unique<ForkedChild>([&] {
    hook = notify_and_hang;
    action();
    return 1;
  });
  if (!reached.wait()) return nullptr;
  return child;
}

// SIGKILLs `child` and checks that it ended by that signal.
inline ::testing::AssertionResult killed(ForkedChild& child) {
  child.kill();
  auto code = child.wait();
  if (code == -SIGKILL) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "child ended with " << (code ? std::to_string(*code) : "nothing");
}

}  // namespace mpx::test
