// mpx-top: shows a running supervision tree, as top shows processes.
//
//   mpx-top NAME            refreshed in place every 0.5 s until Ctrl-C
//   mpx-top NAME --once     one plain-text table
//   mpx-top NAME --json     the snapshot as the tree publishes it
//
// The table has a row per child of the whole tree, depth first: a nested
// supervisor's children follow its row, indented under it as pstree draws
// a process tree ("|-", "`-"). A host on another node shows its pid there
// with the node's name, "4242@node-b"; the PID column widens for it.
//
// NAME is the supervisor's name; any terminal of the same user can attach.
// The tree publishes a snapshot in /dev/shm/mpx-top.NAME (see
// mpx/actors/detail/status_segment.hpp); a tree that is gone has none, and
// mpx-top says so and exits 1. Exit 2: bad arguments.
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "mpx/actors/detail/status_segment.hpp"

namespace {

std::string cell(const nlohmann::json& j) {
  if (j.is_null()) return "-";
  if (j.is_string()) return j.get<std::string>();
  if (j.is_number_float()) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f", j.get<double>());
    return buf;
  }
  return j.dump();
}

// One table row per child, depth first: a nested supervisor's children
// follow it, indented by level with ASCII branches as `pstree -A` draws them
// ("|-" a child with siblings after it, "`-" the last; "| " carries a branch
// down past a deeper level).
struct Row {
  std::string name;  // the CHILD column: branches, then the id
  std::string pid;   // the PID column: "4242", or "4242@node-b" on another node
  const nlohmann::json* child;
};

std::string pid_cell(const nlohmann::json& c) {
  const std::string node = c.contains("node") ? cell(c["node"]) : "";
  return cell(c["pid"]) + (node.empty() ? "" : "@" + node);
}

void collect(const nlohmann::json& children, const std::string& indent, bool nested, std::vector<Row>& rows) {
  if (!children.is_array()) return;
  for (std::size_t i = 0; i < children.size(); ++i) {
    const auto& c = children[i];
    const bool last = i + 1 == children.size();
    rows.push_back({indent + (nested ? (last ? "`-" : "|-") : "") + cell(c["id"]), pid_cell(c), &c});
    if (c.contains("children")) collect(c["children"], indent + (nested ? (last ? "  " : "| ") : ""), true, rows);
  }
}

// Pads `s` to `width` (at least), on the right or, for `right`-aligned, on the left.
std::string pad(const std::string& s, int width, bool right) {
  const std::string fill(static_cast<std::size_t>(std::max(0, width - static_cast<int>(s.size()))), ' ');
  return right ? fill + s : s + fill;
}

// One table line: CHILD, KIND, STATE left-aligned, PID and the figures
// (RESTARTS .. MSG/S) right-aligned; CHILD and PID have the widths given.
std::string line(int width, const std::string& name, const std::string& kind, const std::string& state,
                 int pid_width, const std::string& pid, const std::vector<std::string>& figures) {
  static constexpr int figure_widths[] = {9, 10, 9, 8, 9, 10};
  std::string out = pad(name, width, false) + " " + pad(kind, 10, false) + " " + pad(state, 10, false) + " " +
                    pad(pid, pid_width, true);
  for (std::size_t i = 0; i < figures.size() && i < std::size(figure_widths); ++i)
    out += " " + pad(figures[i], figure_widths[i], true);
  return out + "\n";
}

std::string table(const nlohmann::json& tree) {
  std::string out = "supervisor " + cell(tree["name"]) + " (pid " + cell(tree["pid"]) + ", " +
                    cell(tree["strategy"]) + ")" +
                    (tree.value("failed", false) ? "  FAILED: " + tree.value("failure", std::string()) : "") + "\n";
  std::vector<Row> rows;
  collect(tree["children"], "", false, rows);
  int width = 20;     // the CHILD column grows with the deepest, longest row
  int pid_width = 8;  // the PID column with the longest "pid@node"
  for (const auto& r : rows) {
    width = std::max(width, static_cast<int>(r.name.size()));
    pid_width = std::max(pid_width, static_cast<int>(r.pid.size()));
  }
  out += line(width, "CHILD", "KIND", "STATE", pid_width, "PID",
              {"RESTARTS", "UPTIME_S", "LAST_EXIT", "MAILBOX", "IN_FLIGHT", "MSG/S"});
  for (const auto& r : rows) {
    const auto& c = *r.child;
    out += line(width, r.name, cell(c["kind"]), cell(c["state"]), pid_width, r.pid,
                {cell(c["restarts"]), cell(c["uptime_s"]), cell(c["last_exit"]),
                 cell(c.value("mailbox_depth", nlohmann::json())), cell(c.value("in_flight", nlohmann::json())),
                 cell(c.value("messages_per_s", nlohmann::json()))});
  }
  return out;
}

int usage() {
  std::cerr << "usage: mpx-top NAME [--once | --json]\n";
  return 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || argc > 3) return usage();
  const std::string name = argv[1];
  const std::string mode = argc == 3 ? argv[2] : "";
  if (name.empty() || name[0] == '-' || (!mode.empty() && mode != "--once" && mode != "--json")) return usage();
  for (;;) {
    auto text = mpx::actors::detail::read_status(name);
    if (!text) {
      std::cerr << "mpx-top: no running supervision tree named '" << name << "'\n";
      return 1;
    }
    if (mode == "--json") {
      std::cout << *text << std::endl;
      return 0;
    }
    nlohmann::json tree;
    try {
      tree = nlohmann::json::parse(*text);
    } catch (const nlohmann::json::exception& e) {
      std::cerr << "mpx-top: unreadable status: " << e.what() << "\n";
      return 1;
    }
    if (mode == "--once") {
      std::cout << table(tree);
      return 0;
    }
    std::cout << "\033[H\033[2J" << table(tree) << std::flush;  // redraw in place
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
}
