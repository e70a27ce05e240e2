// mpx-top: shows a running supervision tree, as top shows processes.
//
//   mpx-top NAME            refreshed in place every 0.5 s until Ctrl-C
//   mpx-top NAME --once     one plain-text table
//   mpx-top NAME --json     the snapshot as the tree publishes it
//
// The table has a row per child of the whole tree, depth first: a nested
// supervisor's children follow its row, indented under it as pstree draws
// a process tree ("|-", "`-").
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
  const nlohmann::json* child;
};

void collect(const nlohmann::json& children, const std::string& indent, bool nested, std::vector<Row>& rows) {
  if (!children.is_array()) return;
  for (std::size_t i = 0; i < children.size(); ++i) {
    const auto& c = children[i];
    const bool last = i + 1 == children.size();
    rows.push_back({indent + (nested ? (last ? "`-" : "|-") : "") + cell(c["id"]), &c});
    if (c.contains("children")) collect(c["children"], indent + (nested ? (last ? "  " : "| ") : ""), true, rows);
  }
}

std::string table(const nlohmann::json& tree) {
  std::string out = "supervisor " + cell(tree["name"]) + " (pid " + cell(tree["pid"]) + ", " +
                    cell(tree["strategy"]) + ")" +
                    (tree.value("failed", false) ? "  FAILED: " + tree.value("failure", std::string()) : "") + "\n";
  std::vector<Row> rows;
  collect(tree["children"], "", false, rows);
  int width = 20;  // the CHILD column grows with the deepest, longest row
  for (const auto& r : rows) width = std::max(width, static_cast<int>(r.name.size()));
  char line[512];
  std::snprintf(line, sizeof line, "%-*s %-10s %-10s %8s %9s %10s %9s %8s %9s %10s\n", width, "CHILD", "KIND", "STATE",
                "PID", "RESTARTS", "UPTIME_S", "LAST_EXIT", "MAILBOX", "IN_FLIGHT", "MSG/S");
  out += line;
  for (const auto& r : rows) {
    const auto& c = *r.child;
    out += r.name + std::string(static_cast<std::size_t>(width) - r.name.size(), ' ');
    std::snprintf(line, sizeof line, " %-10s %-10s %8s %9s %10s %9s %8s %9s %10s\n", cell(c["kind"]).c_str(),
                  cell(c["state"]).c_str(), cell(c["pid"]).c_str(), cell(c["restarts"]).c_str(),
                  cell(c["uptime_s"]).c_str(), cell(c["last_exit"]).c_str(),
                  cell(c.value("mailbox_depth", nlohmann::json())).c_str(),
                  cell(c.value("in_flight", nlohmann::json())).c_str(),
                  cell(c.value("messages_per_s", nlohmann::json())).c_str());
    out += line;
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
