// mpx-top attaches to a running supervision tree by its name (real tool,
// real tree in this process) and finds nothing once the tree has stopped;
// rows a live tree cannot give here (a host on another node) come from a
// snapshot published with the library's own writer.
#include <gtest/gtest.h>
#include <unistd.h>

#include <chrono>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "mpx/actors.hpp"
#include "mpx/actors/detail/status_segment.hpp"
#include "test_support.hpp"

using namespace std::chrono_literals;
namespace ma = mpx::actors;

namespace {

[[noreturn]] void idle_forever() {
  for (;;) ::pause();
}

struct Nop {
  template <class A>
  void serialize(A&) {}
};
ma::Behavior top_actor(ma::Context&) {
  return {[](const Nop&) { return true; }};
}
MPX_REGISTER_ACTOR(top_actor);

mpx::test::RunResult top(std::vector<std::string> args) {
  std::vector<std::string> argv{std::string(MPX_BINARY_DIR) + "/tools/mpx-top"};
  argv.insert(argv.end(), args.begin(), args.end());
  return mpx::test::run_program(argv, 30s);
}

// The index of the first line starting with `prefix`, or -1.
int line_starting(const std::vector<std::string>& lines, const std::string& prefix) {
  for (std::size_t i = 0; i < lines.size(); ++i)
    if (lines[i].rfind(prefix, 0) == 0) return static_cast<int>(i);
  return -1;
}

// Waits (bounded) until the status `name` publishes contains `text`: each
// nested level reaches the root's segment within about 0.5 s.
bool wait_published(const std::string& name, const std::string& text, std::chrono::seconds limit = 30s) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < deadline) {
    const auto status = ma::detail::read_status(name);
    if (status && status->find(text) != std::string::npos) return true;
    std::this_thread::sleep_for(20ms);
  }
  return false;
}

}  // namespace

TEST(MpxTop, OnceAndJsonShowTheRunningTreeThenNothingAfterStop) {
  const std::string name = "top-tree-" + std::to_string(::getpid());
  pid_t janitor = 0;
  {
    ma::Supervisor sup(name, ma::SupervisorOptions(),
                       {ma::ChildSpec::process("janitor", idle_forever),
                        ma::ChildSpec::host("top-host-" + std::to_string(::getpid()), ma::HostOptions(),
                                            {ma::ActorSpec::make("top_actor", "a")})});
    janitor = sup.which_children()[0].pid;

    auto once = top({name, "--once"});
    ASSERT_EQ(once.exit_code, 0) << once.err;
    EXPECT_NE(once.out.find("supervisor " + name + " (pid " + std::to_string(::getpid()) + ", one_for_one)"),
              std::string::npos)
        << once.out;
    EXPECT_NE(once.out.find("janitor"), std::string::npos) << once.out;
    EXPECT_NE(once.out.find(std::to_string(janitor)), std::string::npos) << once.out;
    EXPECT_NE(once.out.find("running"), std::string::npos) << once.out;

    auto json = top({name, "--json"});
    ASSERT_EQ(json.exit_code, 0) << json.err;
    auto tree = nlohmann::json::parse(json.out);
    EXPECT_EQ(tree["name"], name);
    ASSERT_EQ(tree["children"].size(), 2u);
    EXPECT_EQ(tree["children"][0]["pid"], janitor);
    EXPECT_EQ(tree["children"][1]["kind"], "host");
    EXPECT_EQ(tree["children"][1]["mailbox_depth"], 0);
  }
  auto gone = top({name, "--once"});
  EXPECT_EQ(gone.exit_code, 1);
  EXPECT_NE(gone.err.find("no running supervision tree"), std::string::npos) << gone.err;
  EXPECT_FALSE(mpx::test::dev_shm_names().count("mpx-top." + name));
}

TEST(MpxTop, BadArguments) {
  EXPECT_EQ(top({}).exit_code, 2);
  EXPECT_EQ(top({"x", "--bogus"}).exit_code, 2);
  EXPECT_EQ(top({"--once"}).exit_code, 2);
}

// A running tree of three levels: root -> nested supervisor (a host and a
// supervisor of its own) -> leaf process, then a process of the root's.
// --once shows every row, each under its parent, indented by level.
TEST(MpxTop, OnceShowsTheWholeTreeIndentedByLevel) {
  const std::string tag = std::to_string(::getpid());
  const std::string name = "top-nest-" + tag, sub = "top-sub-" + tag, subsub = "top-subsub-" + tag,
                    host = "top-subhost-" + tag;
  ma::Supervisor sup(
      name, ma::SupervisorOptions(),
      {ma::ChildSpec::supervisor(
           sub, ma::SupervisorOptions(),
           {ma::ChildSpec::host(host, ma::HostOptions(), {ma::ActorSpec::make("top_actor", "a")}),
            ma::ChildSpec::supervisor(subsub, ma::SupervisorOptions(), {ma::ChildSpec::process("leaf", idle_forever)})})
           .with_shutdown(30000ms),  // bounded: a stuck nested supervisor fails the test, not hangs it
       ma::ChildSpec::process("janitor", idle_forever)});
  ASSERT_TRUE(wait_published(name, "\"leaf\"")) << ma::detail::read_status(name).value_or("(none)");

  auto json = top({name, "--json"});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  const auto tree = nlohmann::json::parse(json.out);
  const auto& nested = tree["children"][0];
  const auto host_pid = std::to_string(nested["children"][0]["pid"].get<pid_t>());
  const auto leaf_pid = std::to_string(nested["children"][1]["children"][0]["pid"].get<pid_t>());

  auto once = top({name, "--once"});
  ASSERT_EQ(once.exit_code, 0) << once.err;
  const auto lines = mpx::test::lines_of(once.out);
  // Depth first, each child right under its parent; the root's children are
  // not indented, a nested supervisor's are, one level more per level.
  const int sub_row = line_starting(lines, sub + " ");
  const int host_row = line_starting(lines, "|-" + host + " ");
  const int subsub_row = line_starting(lines, "`-" + subsub + " ");
  const int leaf_row = line_starting(lines, "  `-leaf ");
  const int janitor_row = line_starting(lines, "janitor ");
  ASSERT_GE(sub_row, 0) << once.out;
  EXPECT_EQ(host_row, sub_row + 1) << once.out;
  EXPECT_EQ(subsub_row, sub_row + 2) << once.out;
  EXPECT_EQ(leaf_row, sub_row + 3) << once.out;
  EXPECT_EQ(janitor_row, sub_row + 4) << once.out;
  ASSERT_GE(leaf_row, 0) << once.out;
  ASSERT_GE(host_row, 0) << once.out;
  // Each nested row has the columns of any row: kind, state, pid, and a
  // host's mailbox.
  EXPECT_NE(lines[host_row].find(" host "), std::string::npos) << lines[host_row];
  EXPECT_NE(lines[host_row].find(" running "), std::string::npos) << lines[host_row];
  EXPECT_NE(lines[host_row].find(" " + host_pid + " "), std::string::npos) << lines[host_row];
  EXPECT_NE(lines[leaf_row].find(" process "), std::string::npos) << lines[leaf_row];
  EXPECT_NE(lines[leaf_row].find(" " + leaf_pid + " "), std::string::npos) << lines[leaf_row];
  // The columns stay aligned: KIND starts at the same offset on every row.
  const auto kind_at = lines[sub_row].find(" supervisor ");
  ASSERT_NE(kind_at, std::string::npos);
  EXPECT_EQ(lines[leaf_row].find(" process "), kind_at) << once.out;
  EXPECT_EQ(lines[host_row].find(" host "), kind_at) << once.out;
}

namespace {

// Splits a table line at runs of spaces (no cell holds a space).
std::vector<std::string> cells_of(const std::string& line) {
  std::vector<std::string> cells;
  std::istringstream in(line);
  for (std::string c; in >> c;) cells.push_back(c);
  return cells;
}

// A one_for_one supervisor's snapshot as this process would publish it.
ma::SupervisorSnapshot snapshot_named(const std::string& name) {
  ma::SupervisorSnapshot snap;
  snap.name = name;
  snap.pid = ::getpid();
  snap.strategy = "one_for_one";
  return snap;
}

ma::ChildSnapshot running_host(std::string id, pid_t pid) {
  ma::ChildSnapshot child;
  child.id = std::move(id);
  child.kind = "host";
  child.state = "running";
  child.pid = pid;
  return child;
}

}  // namespace

// A host child on another node: its row shows the pid there with the node's
// name ("4242@node-b") and no mailbox figures, and every row keeps its PID
// right-aligned under the header's, however wide the column grows. The
// status is published by the library's own writer from the library's own
// snapshot JSON, as a supervisor with such a child publishes it.
TEST(MpxTop, OnceShowsAHostOnAnotherNodeAsPidAtNode) {
  const std::string name = "top-remote-" + std::to_string(::getpid());
  auto snap = snapshot_named(name);
  auto remote = running_host("worker-1", 4242);
  remote.node = "node-b";
  remote.restarts = 1;
  remote.uptime_s = 12.3;
  remote.last_exit = -9;
  auto local = running_host("local-host", 4243);
  local.mailbox_depth = 5;
  local.in_flight = 1;
  local.messages_per_s = 40.0;
  snap.children = {remote, local};
  ma::detail::StatusWriter writer(name);  // unlinks the segment when the test ends, also on failure
  ASSERT_TRUE(writer.ok());
  writer.publish(snap.to_json());

  auto once = top({name, "--once"});
  ASSERT_EQ(once.exit_code, 0) << once.err;
  const auto lines = mpx::test::lines_of(once.out);
  const int header = line_starting(lines, "CHILD ");
  const int remote_row = line_starting(lines, "worker-1 ");
  const int local_row = line_starting(lines, "local-host ");
  ASSERT_GE(header, 0) << once.out;
  ASSERT_GE(remote_row, 0) << once.out;
  ASSERT_GE(local_row, 0) << once.out;
  // CHILD KIND STATE PID RESTARTS UPTIME_S LAST_EXIT MAILBOX IN_FLIGHT MSG/S
  EXPECT_EQ(cells_of(lines[remote_row]),
            (std::vector<std::string>{"worker-1", "host", "running", "4242@node-b", "1", "12.3", "-9", "-", "-", "-"}))
      << once.out;
  EXPECT_EQ(cells_of(lines[local_row]),
            (std::vector<std::string>{"local-host", "host", "running", "4243", "0", "0.0", "-", "5", "1", "40.0"}))
      << once.out;
  // Aligned: each PID ends where the header's does, the columns after it too.
  const auto pid_end = lines[header].find(" PID ") + 4;
  EXPECT_EQ(lines[remote_row].find(" 4242@node-b ") + 12, pid_end) << once.out;
  EXPECT_EQ(lines[local_row].find(" 4243 ") + 5, pid_end) << once.out;
  EXPECT_EQ(lines[remote_row].size(), lines[header].size()) << once.out;
  EXPECT_EQ(lines[local_row].size(), lines[header].size()) << once.out;

  auto json = top({name, "--json"});
  ASSERT_EQ(json.exit_code, 0) << json.err;
  const auto tree = nlohmann::json::parse(json.out);
  EXPECT_EQ(tree["children"][0]["node"], "node-b");
  EXPECT_EQ(tree["children"][0]["pid"], 4242);
  EXPECT_FALSE(tree["children"][1].contains("node"));
}

// Local children only: the table is the one documented in
// docs/supervisors.md, PID 8 wide, as before hosts could run elsewhere.
TEST(MpxTop, OnceKeepsTheDocumentedLayoutForLocalChildren) {
  const std::string name = "top-local-" + std::to_string(::getpid());
  auto snap = snapshot_named(name);
  auto worker = running_host("worker-1", 4242);
  worker.restarts = 1;
  worker.uptime_s = 12.3;
  worker.last_exit = -9;
  worker.mailbox_depth = 0;
  worker.in_flight = 0;
  worker.messages_per_s = 120.0;
  snap.children = {worker};
  ma::detail::StatusWriter writer(name);
  ASSERT_TRUE(writer.ok());
  writer.publish(snap.to_json());

  auto once = top({name, "--once"});
  ASSERT_EQ(once.exit_code, 0) << once.err;
  EXPECT_EQ(once.out,
            "supervisor " + name + " (pid " + std::to_string(::getpid()) +
                ", one_for_one)\n"
                "CHILD                KIND       STATE           PID  RESTARTS   UPTIME_S LAST_EXIT  MAILBOX IN_FLIGHT "
                "     MSG/S\n"
                "worker-1             host       running        4242         1       12.3        -9        0         0 "
                "     120.0\n");
}
