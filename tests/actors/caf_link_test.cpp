// The CAF targets found by cmake/FindCAF.cmake link and run: an actor system
// with the middleman (CAF::io) loaded answers a request. The actors layer
// builds on these targets.
#include <gtest/gtest.h>

#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <caf/openssl/all.hpp>
#include <chrono>
#include <string>

TEST(CafLink, ActorSystemWithMiddlemanAnswersARequest) {
  caf::actor_system_config cfg;
  cfg.load<caf::io::middleman>();
  cfg.set("scheduler.max-threads", 2);
  caf::actor_system system{cfg};
  // The spawn passes an argument on purpose: for a function-based actor
  // spawned without arguments, CAF 0.17's init_fun_factory dereferences a
  // null shared_ptr<std::tuple<>> (caf/detail/init_fun_factory.hpp:99), UB
  // that UBSan reports in scripts/sanitize.sh asan. With an argument the
  // tuple exists, and the test still shows that the CAF targets link and run.
  auto doubler = system.spawn([](int factor) -> caf::behavior {
    return {[factor](int x) { return factor * x; }};
  }, 2);
  caf::scoped_actor self{system};
  int answer = 0;
  self->request(doubler, std::chrono::seconds(10), 21)
      .receive([&](int result) { answer = result; },
               [&](caf::error& err) { FAIL() << "request failed: " << system.render(err); });
  EXPECT_EQ(answer, 42);
  self->send_exit(doubler, caf::exit_reason::user_shutdown);
}

TEST(CafLink, OpensslModuleIsLinked) {
  caf::actor_system_config cfg;
  cfg.load<caf::io::middleman>();
  cfg.load<caf::openssl::manager>();
  cfg.set("scheduler.max-threads", 1);
  caf::actor_system system{cfg};
  EXPECT_TRUE(system.has_openssl_manager());
}
