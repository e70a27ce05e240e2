// The supervisor samples (supervised_service, supervision_tree): each run as
// a program; the test checks the behaviour it prints. Both stop their
// supervisors before they exit (and every child dies with its parent), so
// nothing outlives a run.
#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <optional>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "test_support.hpp"

using mpx::test::lines_of;
using mpx::test::run_program;
using mpx::test::sample_path;
using namespace std::chrono_literals;

namespace {

mpx::test::RunResult run(const std::string& name, const std::vector<std::string>& args = {}) {
  return mpx::test::run_sample(name, args, 120s);  // then SIGKILLed; its children die with it (PR_SET_PDEATHSIG)
}

bool has_line(const std::vector<std::string>& lines, const std::string& line) {
  return std::find(lines.begin(), lines.end(), line) != lines.end();
}

// The first line matching `pattern` (whole line) at or after `from`, with its groups and index.
struct Match {
  std::smatch m;
  std::size_t at = 0;
  [[nodiscard]] std::string operator[](std::size_t i) const { return m[static_cast<int>(i)].str(); }
  [[nodiscard]] int num(std::size_t i) const { return std::stoi(m[static_cast<int>(i)].str()); }
};
std::optional<Match> find_line(const std::vector<std::string>& lines, const std::string& pattern,
                               std::size_t from = 0) {
  const std::regex re(pattern);
  for (std::size_t i = from; i < lines.size(); ++i) {
    Match match;
    if (std::regex_match(lines[i], match.m, re)) {
      match.at = i;
      return match;
    }
  }
  return std::nullopt;
}
std::vector<Match> find_lines(const std::vector<std::string>& lines, const std::string& pattern) {
  std::vector<Match> out;
  for (std::size_t from = 0;;) {
    auto match = find_line(lines, pattern, from);
    if (!match) return out;
    from = match->at + 1;
    out.push_back(std::move(*match));
  }
}

// Mailboxes ("mpx.<tree pid>.<host>" in /dev/shm) of these hosts whose
// process tree is gone: left behind. Runs of other tests that are still
// going (ctest -j) have a live tree pid and are not counted.
std::set<std::string> orphan_mailboxes(const std::vector<std::string>& hosts) {
  std::set<std::string> found;
  const std::regex re(R"(mpx\.(\d+)\.(.+))");
  for (const auto& name : mpx::test::dev_shm_names()) {
    std::smatch m;
    if (!std::regex_match(name, m, re)) continue;
    if (std::find(hosts.begin(), hosts.end(), m[2].str()) == hosts.end()) continue;
    if (!mpx::test::pid_exists(std::stoi(m[1]))) found.insert(name);
  }
  return found;
}

std::vector<std::string> consumer_names(int consumers) {
  std::vector<std::string> names;
  for (int k = 1; k <= consumers; ++k) names.push_back("consumer-" + std::to_string(k));
  return names;
}

// ---- supervised_service

struct ServiceRun {
  std::map<std::string, int> first_pid;                   // consumer -> pid at the start
  int killed = 0, restarted = 0;                          // consumer-2's pids
  std::vector<std::pair<std::string, int>> stop_reports;  // (consumer, exit code) of the orderly stop
};

// Checks a run of supervised_service with `tasks` tasks and `consumers`
// consumers (consumer-2 is killed after tasks / 2 were sent).
void check_service_run(const mpx::test::RunResult& r, int tasks, int consumers, ServiceRun& run) {
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.err.find("check failed"), std::string::npos) << r.err;
  const auto lines = lines_of(r.out);
  EXPECT_TRUE(has_line(
      lines, "supervisor service: " + std::to_string(consumers) + " consumers (one_for_one, restart backoff 500 ms)"))
      << r.out;

  // Every consumer host started, in its own process.
  for (const auto& m : find_lines(lines, R"((consumer-\d+) running as pid (\d+))"))
    EXPECT_TRUE(run.first_pid.emplace(m[1], m.num(2)).second) << m[1] << " started twice";
  EXPECT_EQ(static_cast<int>(run.first_pid.size()), consumers) << r.out;
  std::set<int> distinct;
  for (const auto& [name, pid] : run.first_pid) distinct.insert(pid);
  EXPECT_EQ(static_cast<int>(distinct.size()), consumers) << r.out;

  // The kill lands on a task consumer-2 has in hand; the supervisor restarts it with a new pid.
  const int half = tasks / 2;
  int held = -1;
  for (int i = 0; i < half; ++i)
    if (i % consumers == 1) held = i;
  EXPECT_TRUE(has_line(lines, "sent " + std::to_string(half) + " of " + std::to_string(tasks) + " tasks")) << r.out;
  EXPECT_TRUE(has_line(lines, "consumer-2 is handling task " + std::to_string(held))) << r.out;
  auto killed = find_line(lines, R"(killed consumer-2 \(pid (\d+)\) with SIGKILL after sending (\d+) tasks)");
  auto restarted = find_line(lines, R"(consumer-2 restarted as pid (\d+) \(restart 1\))");
  if (!killed || !restarted) {
    ADD_FAILURE() << "no kill or no restart\n" << r.out;
    return;
  }
  run.killed = killed->num(1);
  run.restarted = restarted->num(1);
  EXPECT_EQ(run.killed, run.first_pid["consumer-2"]);
  EXPECT_EQ(killed->num(2), half);
  EXPECT_NE(run.restarted, run.killed);
  EXPECT_EQ(distinct.count(run.restarted), 0u) << "the restarted host reuses a consumer's pid";
  EXPECT_LT(killed->at, restarted->at);

  // The second half went out round robin, consumer-2's share to the dead or restarting host.
  int to_victim = 0;
  for (int i = half; i < tasks; ++i) to_victim += i % consumers == 1;
  auto second_half = find_line(lines, "sent tasks " + std::to_string(half) + R"(\.\.)" + std::to_string(tasks - 1) +
                                          ": " + std::to_string(to_victim) + " of them to consumer-2.*");
  EXPECT_TRUE(second_half) << r.out;

  // What failed with ActorDown was resent; the task in hand at the kill among it.
  int failed = 0;
  auto failures = find_lines(lines, R"((\d+) requests failed with ActorDown \((.*)\): (\d+) in flight at the kill, )"
                                    R"((\d+) sent while consumer-2 was down; resending them)");
  EXPECT_FALSE(failures.empty()) << r.out;
  for (const auto& f : failures) {
    failed += f.num(1);
    EXPECT_NE(f[2].find("consumer-2"), std::string::npos) << f[2];
    EXPECT_LE(f.num(3) + f.num(4), f.num(1));
    EXPECT_GT(f.at, restarted->at);  // resent only once consumer-2 runs again
  }
  if (!failures.empty()) {
    EXPECT_NE(failures[0][2].find("died: exit code -9"), std::string::npos) << failures[0][2];
    EXPECT_GE(failures[0].num(3), 1) << "the held task was in flight at the kill";
  }
  EXPECT_GE(failed, 1);
  EXPECT_LE(failed, 1 + to_victim);  // consumer-2's task in hand, and at most what it was sent while down

  // Every task done exactly once from the producer's point of view, by the consumer it was sent to.
  auto done = find_line(
      lines, "all " + std::to_string(tasks) + R"( tasks done, each answered exactly once \((\d+) after a resend\))");
  ASSERT_TRUE(done) << r.out;
  EXPECT_EQ(done->num(1), failed);
  int answered = 0;
  for (int k = 1; k <= consumers; ++k) {
    int assigned = 0;
    for (int i = 0; i < tasks; ++i) assigned += i % consumers == k - 1;
    auto line = find_line(lines, "consumer-" + std::to_string(k) + R"( answered (\d+) tasks)");
    EXPECT_TRUE(line) << r.out;
    if (line) {
      EXPECT_EQ(line->num(1), assigned) << "consumer-" << k;
      answered += line->num(1);
    }
  }
  EXPECT_EQ(answered, tasks);

  // The duplicates at-least-once cost: the held task redelivered after the restart, handled again
  // when resent; the tasks consumer-2's mailbox kept whose requests had failed, handled again when resent.
  auto redelivered =
      find_line(lines, "task " + std::to_string(held) +
                           R"( was in hand at the kill: redelivered after the restart, handled (\d+) times)");
  EXPECT_TRUE(redelivered) << r.out;
  if (redelivered) {
    EXPECT_GE(redelivered->num(1), 2);
    EXPECT_LE(redelivered->num(1), 3);  // before the kill, redelivered, resent
  }
  EXPECT_EQ(find_lines(lines, R"(task \d+ was in hand at the kill: .*)").size(), 1u) << r.out;
  auto handled = find_line(lines, R"(the consumers handled (\d+) tasks: (\d+) duplicates in (\d+) tasks )"
                                  R"(\(at-least-once\), 1 redelivered, 0 never handled)");
  EXPECT_TRUE(handled) << r.out;
  if (handled) {
    const int total = handled->num(1), duplicates = handled->num(2), duplicated = handled->num(3);
    EXPECT_EQ(total, tasks + duplicates);
    EXPECT_GE(duplicates, 1);
    EXPECT_LE(duplicated, failed);          // only resent tasks were handled twice
    EXPECT_LE(duplicates, duplicated + 1);  // twice each, the held one at most three times
  }

  // One restart; the supervisor's exit reports: the kill, then the orderly stop in reverse order.
  EXPECT_TRUE(has_line(lines, "restarts: 1")) << r.out;
  auto reports = find_lines(lines, R"(exit report: (consumer-\d+) \(pid (\d+)\) (.+), exit code (-?\d+))");
  ASSERT_EQ(static_cast<int>(reports.size()), 1 + consumers) << r.out;
  EXPECT_EQ(reports[0][1], "consumer-2");
  EXPECT_EQ(reports[0].num(2), run.killed);
  EXPECT_EQ(reports[0][3], "killed by signal");
  EXPECT_EQ(reports[0].num(4), -9);
  auto stopped = find_line(lines, "supervisor stopped");
  ASSERT_TRUE(stopped) << r.out;
  EXPECT_EQ(stopped->at, lines.size() - 1) << r.out;
  for (int i = 1; i <= consumers; ++i) {
    const Match& report = reports[static_cast<std::size_t>(i)];
    const std::string name = "consumer-" + std::to_string(consumers + 1 - i);  // reverse order
    EXPECT_EQ(report[1], name);
    EXPECT_EQ(report[3], "stopped by the supervisor") << report.m.str();
    EXPECT_EQ(report.num(2), name == "consumer-2" ? run.restarted : run.first_pid[name]);
    EXPECT_EQ(report.num(4), 0) << report.m.str();  // the restarted one too: stopped in order
    run.stop_reports.emplace_back(report[1], report.num(4));
  }

  // Nothing outlives the run.
  for (const auto& [name, pid] : run.first_pid) EXPECT_FALSE(mpx::test::pid_exists(pid)) << name;
  EXPECT_FALSE(mpx::test::pid_exists(run.restarted));
}

}  // namespace

TEST(SupervisedService, EveryTaskIsDoneOnceThoughAConsumerHostIsKilled) {
  const auto hosts = consumer_names(3);
  const auto orphans_before = orphan_mailboxes(hosts);
  auto r = run("supervised_service");  // 200 tasks, 3 consumers
  ServiceRun service;
  check_service_run(r, 200, 3, service);
  EXPECT_EQ(orphan_mailboxes(hosts), orphans_before);  // stopped: mailboxes retired
}

TEST(SupervisedService, OtherSizes) {
  for (const auto& [tasks, consumers] : {std::pair{40, 4}, std::pair{9, 2}}) {
    SCOPED_TRACE("--tasks " + std::to_string(tasks) + " --consumers " + std::to_string(consumers));
    auto r = run("supervised_service",
                 {"--tasks", std::to_string(tasks), "--consumers", std::to_string(consumers), "--task-ms", "1"});
    ServiceRun service;
    check_service_run(r, tasks, consumers, service);
  }
}

TEST(SupervisedService, RejectsBadArguments) {
  const std::vector<std::vector<std::string>> bad_arguments{{"--tasks", "3"},    {"--tasks", "x"}, {"--consumers", "1"},
                                                            {"--task-ms", "-1"}, {"--tasks"},      {"-n"}};
  for (const auto& bad : bad_arguments) {
    auto r = run("supervised_service", bad);
    EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
    EXPECT_NE(r.err.find("usage:"), std::string::npos) << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
  }
}

// The supervisor restarts children from its watcher thread, and the kernel
// ties a child's parent-death signal to the thread that forked it: stop()
// must stop the children before that thread ends, so a restarted host is
// stopped in order (exit 0), not SIGKILLed.
TEST(SupervisedService, ARestartedHostIsStoppedInOrder) {
  auto r = run("supervised_service", {"--tasks", "40", "--task-ms", "1"});
  ServiceRun service;
  check_service_run(r, 40, 3, service);
  ASSERT_EQ(service.stop_reports.size(), 3u);
  EXPECT_EQ(service.stop_reports[1].first, "consumer-2");
  EXPECT_EQ(service.stop_reports[1].second, 0) << r.out;
}

// ---- supervision_tree

namespace {

const std::vector<std::string> kLeaves{"workers/exiter", "workers/segfaulter", "workers/thrower", "escalating/flaky"};

struct TreeRun {
  int logger = 0, workers = 0, escalating = 0, restarted = 0;
  std::size_t stopping = 0;  // the line "stopping the tree"
  std::vector<std::string> lines;
  std::map<std::string, std::vector<Match>> incarnations;  // leaf -> its "started" lines (in `lines`)
};

std::string report_re(const std::string& who, const std::string& pid, const std::string& how, const std::string& code,
                      const std::string& restarts) {
  // A child that died of an exception has it in its report: ", uncaught <type>: <what>".
  return "report: " + who + R"( \(pid )" + pid + R"(\) )" + how + ", exit code " + code + "(, uncaught .*)?, restarts " +
         restarts;
}

void check_tree_run(const mpx::test::RunResult& r, TreeRun& run) {
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  const auto& lines = run.lines = lines_of(r.out);
  auto started = find_line(lines, R"(tree started: root \(rest_for_one\) with logger \(pid (\d+)\) )"
                                  R"(workers \(pid (\d+)\) escalating \(pid (\d+)\))");
  auto stopping = find_line(lines, "stopping the tree");
  if (!started || !stopping) {
    ADD_FAILURE() << r.out;
    return;
  }
  run.logger = started->num(1);
  run.workers = started->num(2);
  run.escalating = started->num(3);
  run.stopping = stopping->at;
  EXPECT_EQ(std::set<int>({run.logger, run.workers, run.escalating}).size(), 3u);

  // Each leaf: crashed once in its first incarnation, restarted once with a new pid.
  for (const auto& m : find_lines(lines, R"((\w+/\w+) \(pid (\d+)\) started, incarnation (\d+))"))
    run.incarnations[m[1]].push_back(m);
  EXPECT_EQ(run.incarnations.size(), kLeaves.size()) << r.out;
  const std::map<std::string, std::pair<std::string, std::string>> crash{
      {"workers/exiter", {"exited", "3"}},
      {"workers/segfaulter", {"killed by signal", "-11"}},
      {"workers/thrower", {"exited", "1"}},
      {"escalating/flaky", {"exited", "2"}}};
  for (const auto& leaf : kLeaves) {
    SCOPED_TRACE(leaf);
    const auto& inc = run.incarnations[leaf];
    ASSERT_EQ(inc.size(), 2u) << r.out;
    EXPECT_EQ(inc[0].num(3), 1);
    EXPECT_EQ(inc[1].num(3), 2);
    EXPECT_NE(inc[0].num(2), inc[1].num(2));
    EXPECT_LT(inc[1].at, run.stopping);
    // Its supervisor reported the crash (from its own process) before it started the next one.
    auto report = find_line(lines, report_re(leaf, inc[0][2], crash.at(leaf).first, crash.at(leaf).second, "0"));
    ASSERT_TRUE(report) << r.out;
    if (leaf == "workers/thrower") {
      EXPECT_NE(lines[report->at].find(", uncaught std::runtime_error: thrower: something went wrong, "),
                std::string::npos)
          << lines[report->at];
    }
    EXPECT_GT(report->at, inc[0].at);
    EXPECT_LT(report->at, inc[1].at);
  }

  // Root saw one thing before the stop: escalating gave up (exit 1) and was restarted; flaky's second
  // incarnation runs under the new escalating. logger and workers, before it, kept running (rest_for_one).
  auto escalation = find_line(lines, report_re("root/escalating", std::to_string(run.escalating), "exited", "1", "0"));
  ASSERT_TRUE(escalation) << r.out;
  EXPECT_LT(escalation->at, run.incarnations["escalating/flaky"][1].at);
  auto flaky = find_line(lines, report_re("escalating/flaky", R"(\d+)", "exited", "2", "0"));
  ASSERT_TRUE(flaky);
  EXPECT_LT(flaky->at, escalation->at);
  std::size_t root_reports = 0;
  for (const auto& m : find_lines(lines, R"(report: root/.*)")) root_reports += m.at < run.stopping;
  EXPECT_EQ(root_reports, 1u) << r.out;
  auto seen = find_line(lines, "root saw the escalation: escalating \\(pid " + std::to_string(run.escalating) +
                                   R"(\) exited with 1; restarted as pid (\d+) \(restart 1\))");
  ASSERT_TRUE(seen) << r.out;
  run.restarted = seen->num(1);
  EXPECT_NE(run.restarted, run.escalating);
  EXPECT_TRUE(has_line(lines, "every leaf crashed once and runs again")) << r.out;
  EXPECT_TRUE(has_line(lines, "logger: running, pid " + std::to_string(run.logger) + ", restarts 0")) << r.out;
  EXPECT_TRUE(has_line(lines, "workers: running, pid " + std::to_string(run.workers) + ", restarts 0")) << r.out;
  EXPECT_TRUE(has_line(lines, "escalating: running, pid " + std::to_string(run.restarted) + ", restarts 1")) << r.out;

  // The stop: root's children in reverse order, each nested supervisor stopping its own children
  // before it exits; then "tree stopped", the last line.
  auto stop_escalating = find_line(
      lines, report_re("root/escalating", std::to_string(run.restarted), "stopped by the supervisor", R"(-?\d+)", "1"),
      run.stopping);
  auto stop_workers =
      find_line(lines, report_re("root/workers", std::to_string(run.workers), "stopped by the supervisor", "0", "0"),
                run.stopping);
  auto stop_logger =
      find_line(lines, report_re("root/logger", std::to_string(run.logger), "stopped by the supervisor", "-15", "0"),
                run.stopping);
  ASSERT_TRUE(stop_escalating && stop_workers && stop_logger) << r.out;
  EXPECT_LT(stop_escalating->at, stop_workers->at);
  EXPECT_LT(stop_workers->at, stop_logger->at);
  for (const auto* leaf : {"workers/thrower", "workers/segfaulter", "workers/exiter"}) {
    SCOPED_TRACE(leaf);
    auto stop =
        find_line(lines, report_re(leaf, run.incarnations[leaf][1][2], "stopped by the supervisor", R"(-?\d+)", "1"),
                  run.stopping);
    ASSERT_TRUE(stop) << r.out;
    EXPECT_LT(stop->at, stop_workers->at);
  }
  EXPECT_FALSE(lines.empty());
  if (!lines.empty()) {
    EXPECT_EQ(lines.back(), "tree stopped");
  }

  // root's children were reaped.
  for (int pid : {run.logger, run.workers, run.escalating, run.restarted})
    EXPECT_FALSE(mpx::test::pid_exists(pid)) << pid;
}

}  // namespace

TEST(SupervisionTree, EscalationRestartAndOrderlyStop) {
  auto r = run("supervision_tree");
  TreeRun tree;
  check_tree_run(r, tree);
  EXPECT_LT(r.elapsed, 60s);
}

TEST(SupervisionTree, RejectsBadArguments) {
  const std::vector<std::vector<std::string>> bad_arguments{
      {"--timeout", "0"}, {"--timeout", "x"}, {"--timeout"}, {"-x"}};
  for (const auto& bad : bad_arguments) {
    auto r = run("supervision_tree", bad);
    EXPECT_EQ(r.exit_code, 2) << r.out << r.err;
    EXPECT_NE(r.err.find("usage:"), std::string::npos) << r.err;
    EXPECT_TRUE(r.out.empty()) << r.out;
  }
}

// As ARestartedHostIsStoppedInOrder: the restarted escalating stops in order
// (exit 0, after stopping flaky with SIGTERM), and the restarted workers
// leaves with SIGTERM (-15).
TEST(SupervisionTree, RestartedChildrenAreStoppedInOrder) {
  auto r = run("supervision_tree");
  TreeRun tree;
  check_tree_run(r, tree);
  const auto& lines = tree.lines;
  EXPECT_TRUE(find_line(
      lines, report_re("root/escalating", std::to_string(tree.restarted), "stopped by the supervisor", "0", "1"),
      tree.stopping))
      << r.out;
  for (const auto& leaf : kLeaves) {
    SCOPED_TRACE(leaf);
    ASSERT_EQ(tree.incarnations[leaf].size(), 2u);
    // flaky's second incarnation is the first child of a new escalating: restarts 0.
    const std::string restarts = leaf == "escalating/flaky" ? "0" : "1";
    EXPECT_TRUE(find_line(lines,
                          report_re(leaf, tree.incarnations[leaf][1][2], "stopped by the supervisor", "-15", restarts),
                          tree.stopping))
        << r.out;
  }
}
