// Pipe and Connection: both directions, simplex refusal, typed messages,
// atomic messages from concurrent senders, large messages, timeouts, EOF.
#include "mpx/pipe.hpp"

#include <gtest/gtest.h>
#include <signal.h>

#include <string>
#include <tuple>
#include <vector>

#include "queue_test_support.hpp"

using mpx::test::ForkedChild;
using namespace std::chrono_literals;

TEST(Pipe, DuplexCarriesBothDirections) {
  auto [a, b] = mpx::Pipe();
  a.send(std::string("ping"));
  EXPECT_EQ(b.recv<std::string>(), "ping");
  b.send(std::int64_t{42});
  EXPECT_EQ(a.recv<std::int64_t>(), 42);
  EXPECT_TRUE(a.readable() && a.writable() && b.readable() && b.writable());
}

TEST(Pipe, SimplexEndsRefuseTheWrongDirection) {
  auto [r, w] = mpx::Pipe(false);
  EXPECT_TRUE(r.readable());
  EXPECT_FALSE(r.writable());
  EXPECT_FALSE(w.readable());
  EXPECT_TRUE(w.writable());
  try {
    r.send(1);
    FAIL() << "send on a receive-only end must throw";
  } catch (const mpx::ConnectionError& e) {
    EXPECT_NE(std::string(e.what()).find("receive-only"), std::string::npos) << e.what();
  }
  try {
    (void)w.recv_bytes();
    FAIL() << "recv on a send-only end must throw";
  } catch (const mpx::ConnectionError& e) {
    EXPECT_NE(std::string(e.what()).find("send-only"), std::string::npos) << e.what();
  }
  w.send(std::string("one way"));
  EXPECT_EQ(r.recv<std::string>(), "one way");
}

TEST(Pipe, TypedEndsAndHeterogeneousValues) {
  auto [a, b] = mpx::Pipe<std::tuple<int, std::optional<int>, std::string>>();
  a.send({42, std::nullopt, "hello"});
  auto v = b.recv();
  EXPECT_EQ(std::get<0>(v), 42);
  EXPECT_FALSE(std::get<1>(v).has_value());
  EXPECT_EQ(std::get<2>(v), "hello");
}

TEST(Pipe, RecvOfAnotherTypeThrowsDecodeError) {
  auto [a, b] = mpx::Pipe();
  a.send(std::string("text"));
  EXPECT_THROW((void)b.recv<std::int64_t>(), mpx::DecodeError);
}

TEST(Pipe, PollAndRecvTimeout) {
  auto [a, b] = mpx::Pipe();
  EXPECT_FALSE(b.poll());
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(b.poll(100ms));
  EXPECT_FALSE(b.recv<int>(100ms).has_value());
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 190ms);
  a.send(7);
  EXPECT_TRUE(b.poll(1s));
  EXPECT_EQ(b.recv<int>(1s), 7);
}

TEST(Pipe, BytesOfEverySize) {
  auto [a, b] = mpx::Pipe();
  for (std::size_t n : {std::size_t{0}, std::size_t{1}, std::size_t{48}, std::size_t{49}, std::size_t{256 * 1024},
                        std::size_t{256 * 1024 + 1}, std::size_t{3} << 20}) {
    mpx::Bytes m(n);
    for (std::size_t i = 0; i < n; ++i) m[i] = static_cast<std::byte>(i * 7);
    ForkedChild sender([&, m] {
      a.send_bytes(m);
      return 0;
    });
    EXPECT_EQ(b.recv_bytes(), m) << n;
    EXPECT_EQ(sender.wait(), 0);
  }
}

TEST(Pipe, ConcurrentSendersNeverTearMessages) {
  auto [a, b] = mpx::Pipe();
  constexpr int kSenders = 3, kEach = 200;
  std::vector<std::unique_ptr<ForkedChild>> kids;
  for (int s = 0; s < kSenders; ++s)
    kids.push_back(std::make_unique<ForkedChild>([&, s] {
      for (int i = 0; i < kEach; ++i) {
        // Small ones fit a ring cell; every 10th is streamed through a lane.
        std::size_t n = i % 10 == 0 ? 300'000 : 1000;
        a.send(std::string(n, static_cast<char>('a' + s)));
      }
      return 0;
    }));
  int counts[kSenders] = {};
  for (int i = 0; i < kSenders * kEach; ++i) {
    auto m = b.recv<std::string>();
    ASSERT_TRUE(m.size() == 1000 || m.size() == 300'000);
    ASSERT_EQ(m.find_first_not_of(m[0]), std::string::npos) << "torn message";
    ++counts[m[0] - 'a'];
  }
  for (auto& k : kids) EXPECT_EQ(k->wait(), 0);
  for (int c : counts) EXPECT_EQ(c, kEach);
}

TEST(Pipe, EofWhenEveryCopyOfThePeerIsClosed) {
  auto [a, b] = mpx::Pipe();
  ForkedChild child([&] {
    b.close();  // the child's copy of the parent's end
    a.send(std::string("last words"));
    return 0;   // _exit closes the child's copy of `a`
  });
  a.close();  // the parent's copy of the child's end
  EXPECT_EQ(b.recv<std::string>(), "last words");
  EXPECT_THROW((void)b.recv<std::string>(), mpx::EOFError);
  EXPECT_EQ(child.wait(), 0);
}

TEST(Pipe, EofWhenThePeerProcessIsKilled) {
  auto [a, b] = mpx::Pipe();
  mpx::test::Signal ready;
  ForkedChild child([&] {
    b.close();
    ready.notify();
    for (;;) ::pause();
    return 0;
  });
  a.close();
  ASSERT_TRUE(ready.wait());
  child.kill();
  EXPECT_THROW((void)b.recv_bytes(), mpx::EOFError);
  EXPECT_TRUE(b.poll());  // poll reports the end of file as readable
}

TEST(Pipe, SendToAClosedPeerThrowsBrokenPipe) {
  auto [a, b] = mpx::Pipe();
  b.close();
  EXPECT_THROW(a.send(1), mpx::BrokenPipeError);
}

TEST(Pipe, UseAfterCloseThrows) {
  auto [a, b] = mpx::Pipe();
  a.close();
  EXPECT_TRUE(a.closed());
  EXPECT_THROW(a.send(1), mpx::ConnectionError);
  EXPECT_THROW((void)a.recv_bytes(), mpx::ConnectionError);
  mpx::Connection none;
  EXPECT_THROW(none.send(1), mpx::ConnectionError);
}
