// The manager's transport: TCP with the key, a wrong key refused, and
// malformed, truncated or oversized requests that close only their own
// connection (raw bytes sent on real sockets).
#include <gtest/gtest.h>

#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>

#include "child_process.hpp"
#include "mpx/detail/futex.hpp"
#include "mpx/listener.hpp"
#include "mpx/manager.hpp"

using namespace std::chrono_literals;
using mpx::test::Child;
namespace wire = mpx::detail::manager;

namespace {

mpx::Address tcp_address(const std::string& text) {
  const auto colon = text.rfind(':');
  return mpx::Address::tcp(text.substr(0, colon), static_cast<std::uint16_t>(std::stoi(text.substr(colon + 1))));
}

// An authenticated raw connection that said hello as a TCP client.
mpx::SocketConnection raw_client(const mpx::Manager& m) {
  auto c = mpx::Client(tcp_address(m.address()), m.authkey(), 10s);
  c.send(wire::Hello{wire::kProtocolVersion, false, ::getpid()});
  auto welcome = c.recv<wire::Welcome>(10s);
  EXPECT_TRUE(welcome.has_value());
  return c;
}

// True when the server closed `c` (end of file) within 10 s.
bool closed_by_server(mpx::SocketConnection& c) {
  try {
    (void)c.recv_bytes(10s);  // an answer, or nothing in 10 s: not closed
    return false;
  } catch (const mpx::EOFError&) {
    return true;
  }
}

}  // namespace

TEST(ManagerTransport, TcpClientWithTheKeyUsesTheSameObjects) {
  mpx::Manager m({.address = "127.0.0.1:0", .authkey = "secret"});
  EXPECT_EQ(m.address().rfind("127.0.0.1:", 0), 0u) << m.address();
  auto d = m.dict<std::string, int>();
  d.set("local", 1);
  // A child that knows only the address and the key (as another program would).
  const auto address = m.address();
  Child remote([&] {
    auto r = mpx::Manager::connect(address, "secret");
    auto l = r.list<int>();
    l.append(5);
    auto q = r.Queue<int>();
    q.put(3);
    return l.snapshot() == std::vector<int>{5} && q.get(1s) == 3 ? 0 : 1;
  });
  EXPECT_EQ(remote.join(), 0);
  auto r = mpx::Manager::connect(address, "secret");
  EXPECT_EQ(r.pid(), 0);
  auto lock = r.Lock();
  EXPECT_TRUE(lock.acquire(1s));
  lock.release();
  EXPECT_EQ(d.get("local"), 1);
}

TEST(ManagerTransport, WrongKeyIsRefusedWithAuthenticationError) {
  mpx::Manager m({.address = "127.0.0.1:0", .authkey = "secret"});
  EXPECT_THROW((void)mpx::Manager::connect(m.address(), "wrong"), mpx::AuthenticationError);
  // The server goes on.
  auto r = mpx::Manager::connect(m.address(), "secret");
  auto d = r.dict<int, int>();
  d.set(1, 2);
  EXPECT_EQ(d.get(1), 2);
}

TEST(ManagerTransport, NobodyListeningIsManagerGone) {
  mpx::Listener probe(mpx::Address::tcp("127.0.0.1", 0));
  const auto port = probe.address().port();
  probe.close();
  EXPECT_THROW((void)mpx::Manager::connect("127.0.0.1:" + std::to_string(port), "k"), mpx::ManagerGoneError);
  EXPECT_THROW((void)mpx::Manager::connect("no-port", "k"), mpx::ManagerError);
}

TEST(ManagerTransport, MalformedTruncatedAndOversizedRequestsCloseOnlyThatConnection) {
  mpx::Manager m({.address = "127.0.0.1:0", .authkey = "k"});
  auto d = m.dict<int, int>();
  d.set(1, 1);
  {  // garbage bytes
    auto c = raw_client(m);
    c.send_bytes(std::string_view("this is not an envelope at all, just text"));
    EXPECT_TRUE(closed_by_server(c));
  }
  {  // a valid request, truncated
    wire::Request req;
    req.op = static_cast<std::uint32_t>(wire::Op::ping);
    auto bytes = mpx::encode(req);
    bytes.resize(bytes.size() - 3);
    auto c = raw_client(m);
    c.send_bytes(std::span<const std::byte>(bytes));
    EXPECT_TRUE(closed_by_server(c));
  }
  {  // a valid envelope of another type
    auto c = raw_client(m);
    c.send(std::string("a string, not a Request"));
    EXPECT_TRUE(closed_by_server(c));
  }
  {  // a length header over the limit: refused before anything is allocated
    auto c = raw_client(m);
    const unsigned char header[4] = {0x7f, 0xff, 0xff, 0xf0};
    ASSERT_EQ(::send(c.fileno(), header, 4, MSG_NOSIGNAL), 4);
    EXPECT_TRUE(closed_by_server(c));
  }
  {  // a hello that is not a Hello
    auto c = mpx::Client(tcp_address(m.address()), "k", 10s);
    c.send_bytes(std::string_view("hi"));
    EXPECT_TRUE(closed_by_server(c));
  }
  {  // a well-formed request for an object that does not exist: an answer, not a close
    auto c = raw_client(m);
    wire::Request req;
    req.op = static_cast<std::uint32_t>(wire::Op::d_get);
    req.id = 987654;
    c.send(req);
    auto resp = c.recv<wire::Response>(10s);
    ASSERT_TRUE(resp.has_value());
    EXPECT_EQ(resp->code, static_cast<std::uint32_t>(wire::Code::bad_request));
  }
  // Everyone else was not disturbed.
  EXPECT_EQ(d.get(1), 1);
}

TEST(ManagerTransport, OversizedOrGarbageRequestInSharedMemoryClosesThatClient) {
  mpx::Manager m;
  auto d = m.dict<int, int>();
  d.set(1, 1);
  for (const bool oversized : {true, false}) {
    auto c = mpx::Client(mpx::Address::abstract(m.address().substr(1)), m.authkey(), 10s);
    c.send(wire::Hello{wire::kProtocolVersion, true, ::getpid()});
    auto welcome = c.recv<wire::Welcome>(10s);
    ASSERT_TRUE(welcome && welcome->shared_memory);
    // The memfd comes as SCM_RIGHTS with one byte.
    char byte = 0;
    iovec iov{&byte, 1};
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int))] = {};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    ASSERT_EQ(::recvmsg(c.fileno(), &msg, MSG_CMSG_CLOEXEC), 1);
    int fd = -1;
    std::memcpy(&fd, CMSG_DATA(CMSG_FIRSTHDR(&msg)), sizeof fd);
    void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ::close(fd);
    ASSERT_NE(p, MAP_FAILED);
    auto* h = static_cast<std::atomic<std::uint32_t>*>(p);  // state, server_sleeping, client_sleeping
    auto* length = reinterpret_cast<std::atomic<std::uint64_t>*>(static_cast<char*>(p) + 16);
    std::memcpy(static_cast<char*>(p) + 64, "garbage!", 8);
    length->store(oversized ? (std::uint64_t{1} << 40) : 8);
    h[0].store(1);  // kRequest
    mpx::detail::futex_wake_all(h[0]);
    EXPECT_TRUE(closed_by_server(c)) << (oversized ? "oversized" : "garbage");
    ::munmap(p, 4096);
  }
  EXPECT_EQ(d.get(1), 1);
}
