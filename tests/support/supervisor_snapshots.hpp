// Looking into a supervisor's snapshot from a test: a child by id, and a
// bounded wait until a child anywhere in the tree is in a given state.
#pragma once

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "mpx/actors.hpp"

namespace mpx::test {

// The child `id` of a snapshot's children, or null.
inline const mpx::actors::ChildSnapshot* child_named(const std::vector<mpx::actors::ChildSnapshot>& children,
                                                     const std::string& id) {
  for (const auto& c : children)
    if (c.id == id) return &c;
  return nullptr;
}

// Polls sup.snapshot() (bounded) until the child at `path` (ids from the
// root) satisfies `ok`; returns a copy of it, or nullopt at the deadline.
inline std::optional<mpx::actors::ChildSnapshot> wait_for_child(
    const mpx::actors::Supervisor& sup, const std::vector<std::string>& path,
    const std::function<bool(const mpx::actors::ChildSnapshot&)>& ok,
    std::chrono::seconds limit = std::chrono::seconds(30)) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    const auto snap = sup.snapshot();
    const std::vector<mpx::actors::ChildSnapshot>* level = &snap.children;
    const mpx::actors::ChildSnapshot* found = nullptr;
    for (const auto& id : path) {
      found = child_named(*level, id);
      if (!found) break;
      level = &found->children;
    }
    if (found && ok(*found)) return *found;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return std::nullopt;
}

}  // namespace mpx::test
