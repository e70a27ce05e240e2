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
  auto doubler = system.spawn([]() -> caf::behavior {
    return {[](int x) { return 2 * x; }};
  });
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
