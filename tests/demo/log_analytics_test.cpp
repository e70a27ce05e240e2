// The flagship demo (demo/log_analytics): its pipeline at a small size, run
// as a program, with and without the SIGKILL of a worker host. The demo
// checks its merged result against a sequential reference itself ("check:
// OK"); the tests check that line, the kill and restart it reports, that
// every child of the tree has its exits reported, and that nothing is left
// behind: no process, no shared-memory segment of its tree, no temporary log.
#include <gtest/gtest.h>

#include <cstdlib>
#include <fstream>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "test_support.hpp"

using namespace std::chrono_literals;

namespace {

const std::string kDemo = std::string(MPX_BINARY_DIR) + "/demo/log_analytics";

mpx::test::RunResult run_demo(const std::vector<std::string>& args) {
  std::vector<std::string> argv{kDemo};
  argv.insert(argv.end(), args.begin(), args.end());
  return mpx::test::run_program(argv, 60s);  // then SIGKILLed; its tree dies with it (PR_SET_PDEATHSIG)
}

// The groups of the first line of `text` that matches `pattern` ([0]: the whole match).
std::optional<std::vector<std::string>> find(const std::string& text, const std::string& pattern) {
  const std::regex re(pattern);
  for (const auto& line : mpx::test::lines_of(text)) {
    std::smatch m;
    if (!std::regex_search(line, m, re)) continue;
    std::vector<std::string> groups;
    for (const auto& g : m) groups.push_back(g.str());
    return groups;
  }
  return std::nullopt;
}

struct ExitSeen {
  int pid = 0;
  int code = 0;
  std::string how;
};
struct ChildSeen {
  int restarts = -1;
  std::vector<ExitSeen> exits;
};

// The tree's lines: "├─ worker-2   host   restarts 1, exits: pid 12 -> -9 (killed by signal), pid 13 -> 0 (...)".
std::map<std::string, ChildSeen> tree_of(const std::string& out) {
  std::map<std::string, ChildSeen> tree;
  const std::regex line_re(R"(─ (\S+) .*restarts (\d+), exits:(.*)$)");
  const std::regex exit_re(R"( pid (\d+) -> (-?\d+) \(([^)]*)\))");
  for (const auto& line : mpx::test::lines_of(out)) {
    std::smatch m;
    if (!std::regex_search(line, m, line_re)) continue;
    ChildSeen& c = tree[m[1].str()];
    c.restarts = std::stoi(m[2].str());
    const std::string exits = m[3].str();
    for (auto it = std::sregex_iterator(exits.begin(), exits.end(), exit_re); it != std::sregex_iterator(); ++it)
      c.exits.push_back(ExitSeen{std::stoi((*it)[1].str()), std::stoi((*it)[2].str()), (*it)[3].str()});
  }
  return tree;
}

// The demo's pid (the tree's root): its shared-memory segments are "mpx.<pid>.*".
int root_pid(const std::string& out) {
  auto m = find(out, R"(^log-analytics \(rest_for_one\), pid (\d+)$)");
  return m ? std::stoi((*m)[1]) : 0;
}

// What a finished run must not leave behind.
void expect_nothing_left(const std::string& out, const std::map<std::string, ChildSeen>& tree) {
  const int root = root_pid(out);
  ASSERT_GT(root, 0) << out;
  EXPECT_FALSE(mpx::test::pid_exists(root));
  for (const auto& [id, child] : tree)
    for (const auto& e : child.exits) EXPECT_FALSE(mpx::test::pid_exists(e.pid)) << id << " pid " << e.pid;
  // The hosts' mailboxes are retired by the supervisor's stop; the demo
  // process's own endpoint mailbox ("mpx.<pid>.p<pid>") by the shared-memory
  // tracker once the process is gone: wait for that, bounded.
  const std::string prefix = "mpx." + std::to_string(root) + ".";
  const auto ours = [&] {
    std::set<std::string> found;
    for (const auto& name : mpx::test::dev_shm_names())
      if (name.rfind(prefix, 0) == 0) found.insert(name);
    return found;
  };
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (!ours().empty() && std::chrono::steady_clock::now() < deadline) std::this_thread::sleep_for(10ms);
  for (const auto& name : ours()) ADD_FAILURE() << "left behind: " << name;
  auto analysed = find(out, R"(^analysing (\S+) )");
  ASSERT_TRUE(analysed) << out;
  EXPECT_FALSE(std::ifstream((*analysed)[1]).good()) << "the temporary log is still there: " << (*analysed)[1];
}

const std::vector<std::string> kChildren{"aggregator", "workers", "worker-1", "worker-2", "ingest"};

}  // namespace

// 20,000 lines in 64 KiB batches (about 60 of them), two worker hosts,
// worker-2 SIGKILLed once half of the input is handed out.
TEST(LogAnalyticsDemo, KilledWorkerIsRestartedAndTheResultEqualsTheReference) {
  auto r = run_demo({"--lines", "20000", "--batch-kib", "64", "--workers", "2"});
  ASSERT_FALSE(r.timed_out) << r.out << r.err;
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(find(r.out, R"(^check: OK: the merged result equals the sequential reference \(20,000 lines)"))
      << r.out;
  EXPECT_FALSE(find(r.out, "MISMATCH")) << r.out;

  // The kill and the restart, as the demo saw them.
  auto chaos = find(r.out, R"(^chaos: SIGKILLed worker-2 \(pid (\d+)\) at (\d+)% of the input read.*restarted it as pid (\d+) in)");
  ASSERT_TRUE(chaos) << r.out;
  const int killed = std::stoi((*chaos)[1]);
  const int restarted = std::stoi((*chaos)[3]);
  EXPECT_GE(std::stoi((*chaos)[2]), 50);
  EXPECT_LT(std::stoi((*chaos)[2]), 100);  // midway: part of the input was still to come
  EXPECT_NE(killed, restarted);
  EXPECT_GT(restarted, 0);

  // Every child's exits: worker-2 twice (the kill, then the orderly stop), every other child once, at the stop.
  const auto tree = tree_of(r.out);
  for (const auto& id : kChildren) {
    SCOPED_TRACE(id);
    ASSERT_TRUE(tree.count(id)) << r.out;
    const ChildSeen& c = tree.at(id);
    if (id == "worker-2") {
      EXPECT_EQ(c.restarts, 1);
      ASSERT_EQ(c.exits.size(), 2u) << r.out;
      EXPECT_EQ(c.exits[0].pid, killed);
      EXPECT_EQ(c.exits[0].code, -9);
      EXPECT_EQ(c.exits[0].how, "killed by signal");
      EXPECT_EQ(c.exits[1].pid, restarted);
    } else {
      EXPECT_EQ(c.restarts, 0);
      ASSERT_EQ(c.exits.size(), 1u) << r.out;
    }
    EXPECT_EQ(c.exits.back().code, 0);
    EXPECT_EQ(c.exits.back().how, "stopped by the supervisor");
  }
  EXPECT_EQ(tree.size(), kChildren.size()) << r.out;
  EXPECT_TRUE(find(r.err, R"(progress: 100\.0% done, 20,000 lines, .* restarts 1$)")) << r.err;
  expect_nothing_left(r.out, tree);
}

TEST(LogAnalyticsDemo, NoChaosRunEqualsTheReference) {
  auto r = run_demo({"--lines", "20000", "--batch-kib", "64", "--workers", "2", "--no-chaos"});
  ASSERT_FALSE(r.timed_out) << r.out << r.err;
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(find(r.out, R"(^check: OK: the merged result equals the sequential reference \(20,000 lines)"))
      << r.out;
  EXPECT_FALSE(find(r.out, "^chaos:")) << r.out;
  const auto tree = tree_of(r.out);
  for (const auto& id : kChildren) {
    SCOPED_TRACE(id);
    ASSERT_TRUE(tree.count(id)) << r.out;
    EXPECT_EQ(tree.at(id).restarts, 0);
    ASSERT_EQ(tree.at(id).exits.size(), 1u) << r.out;
    EXPECT_EQ(tree.at(id).exits[0].code, 0);
  }
  EXPECT_TRUE(find(r.err, R"(progress: 100\.0% done, 20,000 lines, .* restarts 0$)")) << r.err;
  expect_nothing_left(r.out, tree);
}

// A log written by hand, with the format's corners: common and combined
// lines, CRLF, a query string, "-" bytes, escaped quotes in the agent, a
// request without a target, broken lines. Returns its path (removed by the caller).
std::string write_hand_log() {
  const std::string path = ::testing::TempDir() + "/log_analytics_test_" + std::to_string(::getpid()) + ".log";
  std::ofstream log(path, std::ios::binary);
  log << "10.0.0.1 - - [29/Nov/2026:10:00:01 +0000] \"GET /a?x=1 HTTP/1.1\" 200 100 \"-\" \"curl/8\" 0.020\n"
      << "10.0.0.1 - - [29/Nov/2026:10:00:59 +0000] \"GET /a HTTP/1.1\" 404 - \"-\" \"curl/8\" 1.5\r\n"
      << "10.0.0.2 - bob [29/Nov/2026:11:01:00 +0100] \"POST /b HTTP/1.1\" 201 50\n"  // common format: no latency
      << "not a log line\n"
      << "10.0.0.3 - - [29/Nov/2026:10:01:00 +0000] \"\\x16\\x03\" 400 157 \"-\" \"-\" 0.001\n"
      << "10.0.0.3 - - [29/Nov/2026:10:02:00 +0000] \"GET /a HTTP/1.1\" 2000 1\n"  // status of 4 digits
      << "10.0.0.2 - - [29/Nov/2026:10:01:30 +0000] \"GET /b HTTP/1.1\" 200 0 \"-\" \"x \\\"y\\\" \\\\\" 0.007";  // no final newline
  return path;
}

TEST(LogAnalyticsDemo, CountsAGivenLog) {
  const std::string path = write_hand_log();
  auto r = run_demo({"--input", path, "--batch-kib", "4", "--workers", "2", "--no-chaos"});
  ::unlink(path.c_str());
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_TRUE(find(r.out, R"(^check: OK: the merged result equals the sequential reference \(7 lines)")) << r.out;
  EXPECT_TRUE(find(r.out, R"(^requests: 5 \(2 malformed lines skipped\), 0\.0 MB sent to 3 clients$)")) << r.out;
  EXPECT_TRUE(find(r.out, R"(^  /a  +2$)")) << r.out;  // the query string is not part of the path
  EXPECT_TRUE(find(r.out, R"(^  /b  +2$)")) << r.out;
  EXPECT_TRUE(find(r.out, R"(^  -  +1$)")) << r.out;   // a request without a target
  for (const auto& [status, n] : std::map<std::string, std::string>{{"200", "2"}, {"201", "1"}, {"400", "1"}, {"404", "1"}})
    EXPECT_TRUE(find(r.out, "^  " + status + " +" + n + " ")) << status << "\n" << r.out;
  // Latencies 20, 1500, 1, 7 ms (after an agent with escaped quotes); the common-format line has none.
  EXPECT_TRUE(find(r.out, R"(p50 7  p90 1,500  p99 1,500  p99\.9 1,500  max 1,500$)")) << r.out;
  // 10:00 (two lines), 10:01 (three: 11:01 at +0100 is 10:01 UTC); the 10:02 line is malformed.
  EXPECT_TRUE(find(r.out, R"(^requests per minute: 2 minutes from 2026-11-29 10:00 to 2026-11-29 10:01 UTC, mean 2, peak 3 at 2026-11-29 10:01$)"))
      << r.out;
}

// The same job with Python's multiprocessing.Pool (demo/python/pool_reference.py)
// gives the same counts, on the generated log and on the hand-written one.
TEST(LogAnalyticsDemo, PythonPoolReferenceAgrees) {
  if (::system("python3 -c 'import multiprocessing' >/dev/null 2>&1") != 0) GTEST_SKIP() << "no python3";
  const std::string hand = write_hand_log();
  for (const auto& input : {std::vector<std::string>{"--lines", "20000"}, {"--input", hand}}) {
    SCOPED_TRACE(input[1]);
    std::vector<std::string> args = input;
    args.insert(args.end(), {"--batch-kib", "64", "--workers", "2", "--no-chaos", "--compare-python"});
    auto r = run_demo(args);
    EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
    EXPECT_TRUE(find(r.out, R"(^python multiprocessing\.Pool \(2 processes, .*x its throughput; its counts agree$)"))
        << r.out;
  }
  ::unlink(hand.c_str());
}

// The check is real: an aggregator that merges one batch twice is caught, and the demo exits 1.
TEST(LogAnalyticsDemo, ADoubleCountedBatchIsAMismatch) {
  auto r = run_demo({"--lines", "20000", "--batch-kib", "64", "--workers", "2", "--no-chaos", "--inject-fault",
                     "double-count"});
  ASSERT_FALSE(r.timed_out) << r.out << r.err;
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_TRUE(find(r.out, R"(^check: MISMATCH: the merged result differs from the sequential reference in: lines, .*status, paths)"))
      << r.out;
  EXPECT_FALSE(find(r.out, "^check: OK")) << r.out;
  expect_nothing_left(r.out, tree_of(r.out));
}

TEST(LogAnalyticsDemo, RejectsBadArguments) {
  for (const std::vector<std::string>& bad :
       {std::vector<std::string>{"--lines", "0"}, {"--lines", "x"}, {"--batch-kib", "1"}, {"--workers", "0"},
        {"--input"}, {"--frobnicate"}, {"--inject-fault", "other"}, {"--input", "a", "--output", "b"}}) {
    auto r = run_demo(bad);
    EXPECT_EQ(r.exit_code, 2) << bad[0] << "\n" << r.out << r.err;
    EXPECT_NE(r.err.find("usage:"), std::string::npos) << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
  }
}
