// mpx-top attaches to a running supervision tree by its name (real tool,
// real tree in this process) and finds nothing once the tree has stopped.
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>

#include <nlohmann/json.hpp>

#include "mpx/actors.hpp"
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
