// multiprocessing.connection's Listener and Client (mpx/listener.hpp), their
// connections (mpx/socket_connection.hpp) and the HMAC challenge
// (mpx/auth.hpp): Unix paths, abstract names and TCP on 127.0.0.1, Python's
// framing, typed errors, timeouts, and interop with python3 both ways.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <glob.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "mpx/auth.hpp"
#include "mpx/listener.hpp"
#include "mpx/socket_connection.hpp"
#include "sync_test_util.hpp"

using namespace std::chrono_literals;
using mpx::Address;
using mpx::Bytes;
using mpx::Listener;
using mpx::SocketConnection;
using mpx::test::Child;
using mpx::test::Signal;

namespace {

std::string str(const Bytes& b) { return {reinterpret_cast<const char*>(b.data()), b.size()}; }
Bytes bytes(std::string_view s) {
  auto p = reinterpret_cast<const std::byte*>(s.data());
  return {p, p + s.size()};
}

std::string unique_name(const std::string& tag) {
  static std::atomic<int> counter{0};
  return "mpx-ltest-" + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
}
std::string unique_path(const std::string& tag) { return "/tmp/" + unique_name(tag); }
bool path_exists(const std::string& p) {
  struct stat st{};
  return ::lstat(p.c_str(), &st) == 0;
}
// Removes a socket path a test made (also when it fails before the owner could).
struct Unlink {
  std::string path;
  ~Unlink() { ::unlink(path.c_str()); }
};

// Writes raw bytes to a socket, as a peer that does not frame would.
void write_raw(int fd, std::string_view data) {
  ASSERT_EQ(::send(fd, data.data(), data.size(), MSG_NOSIGNAL), static_cast<ssize_t>(data.size()));
}

template <class F>
double seconds_of(F&& f) {
  auto t0 = std::chrono::steady_clock::now();
  f();
  return mpx::test::seconds_since(t0);
}

// A connected pair of SocketConnections over a socketpair (Python's Connection(handle)).
std::pair<SocketConnection, SocketConnection> socket_pair() {
  int fds[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) throw std::runtime_error("socketpair");
  return {SocketConnection::adopt(fds[0]), SocketConnection::adopt(fds[1])};
}

// The three families of address the tests run on; each call gives a fresh one.
enum class Kind { path, abstract, tcp };
Address fresh_address(Kind kind) {
  switch (kind) {
    case Kind::path: return Address::unix_socket(unique_path("sock"));
    case Kind::abstract: return Address::abstract(unique_name("abs"));
    case Kind::tcp: break;
  }
  return Address::tcp("127.0.0.1", 0);
}
std::string kind_name(const testing::TestParamInfo<Kind>& info) {
  switch (info.param) {
    case Kind::path: return "UnixPath";
    case Kind::abstract: return "Abstract";
    case Kind::tcp: break;
  }
  return "Tcp";
}

}  // namespace

// ------------------------------------------------------------ every family

class ListenerFamily : public testing::TestWithParam<Kind> {};

TEST_P(ListenerFamily, AuthenticatedRoundTripWithAChildProcess) {
  Listener listener(fresh_address(GetParam()), "secret");
  const Address address = listener.address();
  if (GetParam() == Kind::tcp) {
    EXPECT_NE(address.port(), 0) << "port 0 must report the port bound";
  }
  Child client([&] {
    auto c = mpx::Client(address, "secret", 10s);
    c.send_bytes("ping");
    if (str(c.recv_bytes()) != "pong") return 2;
    c.send(std::vector<int>{1, 2, 3});
    return c.recv<std::string>() == "done" ? 0 : 3;
  });
  auto c = listener.accept(20s);
  ASSERT_TRUE(c.has_value());
  ASSERT_TRUE(listener.last_accepted().has_value());
  EXPECT_EQ(listener.last_accepted()->family(), address.family());
  auto ping = c->recv_bytes(10s);
  ASSERT_TRUE(ping.has_value());
  EXPECT_EQ(str(*ping), "ping");
  c->send_bytes("pong");
  EXPECT_EQ(c->recv<std::vector<int>>(), (std::vector<int>{1, 2, 3}));
  c->send(std::string("done"));
  EXPECT_EQ(client.join(), 0);
  // The client is gone: end of file, at a message boundary.
  EXPECT_THROW((void)c->recv_bytes(10s), mpx::EOFError);
}

TEST_P(ListenerFamily, WrongKeyIsRefusedOnBothSides) {
  Listener listener(fresh_address(GetParam()), "right key");
  const Address address = listener.address();
  Child client([&] {
    try {
      (void)mpx::Client(address, "wrong key", 10s);
    } catch (const mpx::AuthenticationError&) {
      return 0;
    }
    return 1;
  });
  EXPECT_THROW((void)listener.accept(20s), mpx::AuthenticationError);
  EXPECT_EQ(client.join(), 0) << "the client must raise AuthenticationError too";
}

TEST_P(ListenerFamily, KeylessClientIsRefusedByAKeyedListenerAndViceVersa) {
  // A client without a key does not answer the challenge: its first recv is
  // the challenge, and the listener waits for an answer that never comes.
  Listener keyed(fresh_address(GetParam()), "key");
  auto plain = mpx::Client(keyed.address(), "", 10s);
  EXPECT_FALSE(keyed.accept(300ms).has_value()) << "no answer to the challenge: accept gives up at its deadline";
  // A keyed client against a keyless listener: no challenge comes.
  Listener keyless(fresh_address(GetParam()));
  EXPECT_THROW((void)mpx::Client(keyless.address(), "key", 300ms), mpx::TimeoutError);
}

INSTANTIATE_TEST_SUITE_P(Families, ListenerFamily, testing::Values(Kind::path, Kind::abstract, Kind::tcp), kind_name);

// ------------------------------------------------------------ listener

TEST(Listener, PathIsUnlinkedOnCloseAndBindingItTwiceFails) {
  const std::string path = unique_path("unlink");
  Unlink cleanup{path};
  {
    Listener listener(Address::unix_socket(path));
    EXPECT_TRUE(path_exists(path));
    try {
      Listener again(Address::unix_socket(path));
      ADD_FAILURE() << "binding a path in use must fail";
    } catch (const mpx::OSError& e) {
      EXPECT_EQ(e.code(), EADDRINUSE);
    }
    EXPECT_TRUE(path_exists(path)) << "a failed bind must not unlink the path of another listener";
  }
  EXPECT_FALSE(path_exists(path));
}

TEST(Listener, TooLongAUnixPathIsAnOSError) {
  try {
    Listener listener(Address::unix_socket("/tmp/" + std::string(200, 'x')));
    ADD_FAILURE() << "a path over 107 bytes cannot be bound";
  } catch (const mpx::OSError& e) {
    EXPECT_EQ(e.code(), ENAMETOOLONG);
  }
}

TEST(Listener, PicksAnAddressForAFamily) {
  std::string path;
  {
    Listener unix_listener(mpx::Family::unix_socket);
    EXPECT_EQ(unix_listener.address().family(), mpx::Family::unix_socket);
    path = unix_listener.address().path();
    EXPECT_TRUE(path_exists(path));
    auto c = mpx::Client(unix_listener.address());
    EXPECT_TRUE(unix_listener.accept(10s).has_value());
  }
  EXPECT_FALSE(path_exists(path));
  Listener tcp(mpx::Family::inet);
  EXPECT_EQ(tcp.address().host(), "127.0.0.1");
  EXPECT_NE(tcp.address().port(), 0);
}

TEST(Listener, AcceptTimesOutWithoutAClient) {
  Listener listener(mpx::Family::unix_socket, "k");
  double took = seconds_of([&] { EXPECT_FALSE(listener.accept(200ms).has_value()); });
  EXPECT_GE(took, 0.19);
  EXPECT_LT(took, 5.0);
  EXPECT_LT(seconds_of([&] { EXPECT_FALSE(listener.accept(-1s).has_value()); }), 0.5) << "negative: do not wait";
}

TEST(Listener, AcceptAfterCloseIsAConnectionError) {
  Listener listener(mpx::Family::inet);
  listener.close();
  EXPECT_TRUE(listener.closed());
  EXPECT_THROW((void)listener.accept(), mpx::ConnectionError);
}

TEST(Client, NobodyListeningIsAnOSError) {
  const std::string path = unique_path("none");
  try {
    (void)mpx::Client(Address::unix_socket(path), "k", 5s);
    ADD_FAILURE() << "connect to a missing path must fail";
  } catch (const mpx::OSError& e) {
    EXPECT_EQ(e.code(), ENOENT);
  }
  int port;
  {
    Listener l(mpx::Family::inet);
    port = l.address().port();
  }  // closed: nobody listens on that port now
  try {
    (void)mpx::Client(Address::tcp("127.0.0.1", static_cast<std::uint16_t>(port)), "k", 5s);
    ADD_FAILURE() << "connect to a closed port must fail";
  } catch (const mpx::OSError& e) {
    EXPECT_EQ(e.code(), ECONNREFUSED);
  }
}

TEST(Client, TimesOutWhenTheListenerNeverRunsTheChallenge) {
  Listener listener(mpx::Family::inet, "k");  // never accepts: the connection waits in the backlog
  double took = seconds_of([&] { EXPECT_THROW((void)mpx::Client(listener.address(), "k", 200ms), mpx::TimeoutError); });
  EXPECT_GE(took, 0.19);
  EXPECT_LT(took, 5.0);
}

// ------------------------------------------------------------ the challenge

TEST(Challenge, DeliverAndAnswerAgreeOnTheSameKey) {
  auto [a, b] = socket_pair();
  std::thread answerer([&b] { mpx::answer_challenge(b, "shared", 10s); });
  EXPECT_NO_THROW(mpx::deliver_challenge(a, "shared", 10s));
  answerer.join();
}

TEST(Challenge, TheChallengeIsPythons) {
  // "#CHALLENGE#{sha256}" + 40 random bytes; the answer is "{sha256}" + HMAC-SHA256.
  auto [a, b] = socket_pair();
  std::thread deliverer([&a] { EXPECT_THROW(mpx::deliver_challenge(a, "k", 10s), mpx::AuthenticationError); });
  std::string challenge = str(b.recv_bytes(10s).value());
  EXPECT_EQ(challenge.size(), 11u + 8u + 40u);
  EXPECT_EQ(challenge.substr(0, 19), "#CHALLENGE#{sha256}");
  b.send_bytes("{sha256}" + std::string(32, 'x'));  // right form, wrong MAC
  EXPECT_EQ(str(b.recv_bytes(10s).value()), "#FAILURE#");
  deliverer.join();
}

TEST(Challenge, AnswerRefusesWhatIsNotAChallenge) {
  auto [a, b] = socket_pair();
  a.send_bytes("#HELLO#" + std::string(40, 'x'));
  EXPECT_THROW(mpx::answer_challenge(b, "k", 10s), mpx::AuthenticationError);
  a.send_bytes("#CHALLENGE#short");
  EXPECT_THROW(mpx::answer_challenge(b, "k", 10s), mpx::AuthenticationError);
  a.send_bytes("#CHALLENGE#{nosuchdigest}" + std::string(40, 'x'));
  EXPECT_THROW(mpx::answer_challenge(b, "k", 10s), mpx::AuthenticationError);
}

TEST(Challenge, AnOversizedHandshakeMessageIsRefused) {
  auto [a, b] = socket_pair();
  a.send_bytes("#CHALLENGE#" + std::string(300, 'x'));  // Python reads at most 256 bytes
  EXPECT_THROW(mpx::answer_challenge(b, "k", 10s), mpx::MessageLengthError);
  EXPECT_EQ(b.max_message_size(), mpx::kDefaultMaxMessageSize) << "the connection's own limit is not changed";
}

TEST(Challenge, TimesOutWhenThePeerIsSilent) {
  auto [a, b] = socket_pair();
  double took = seconds_of([&] { EXPECT_THROW(mpx::answer_challenge(b, "k", 200ms), mpx::TimeoutError); });
  EXPECT_GE(took, 0.19);
  EXPECT_LT(took, 5.0);
  EXPECT_THROW(mpx::deliver_challenge(a, "k", 200ms), mpx::TimeoutError);
}

// ------------------------------------------------------------ connections

TEST(SocketConnection, SendBytesWithOffsetAndSize) {
  auto [a, b] = socket_pair();
  const Bytes buf = bytes("0123456789");
  a.send_bytes(buf, 2, 3);
  a.send_bytes(buf, 7);
  a.send_bytes(buf, 10);  // empty message
  EXPECT_EQ(str(b.recv_bytes()), "234");
  EXPECT_EQ(str(b.recv_bytes()), "789");
  EXPECT_EQ(b.recv_bytes().size(), 0u);
  EXPECT_THROW(a.send_bytes(buf, 11), mpx::ConnectionError);
  EXPECT_THROW(a.send_bytes(buf, 4, 7), mpx::ConnectionError);
  EXPECT_FALSE(b.poll(0s)) << "a refused send sends nothing";
}

TEST(SocketConnection, RecvBytesIntoAndBufferTooShort) {
  auto [a, b] = socket_pair();
  a.send_bytes("hello");
  a.send_bytes("a message longer than the buffer");
  a.send_bytes("next");
  Bytes buffer(16, std::byte{'.'});
  EXPECT_EQ(b.recv_bytes_into(buffer, 3), 5u);
  EXPECT_EQ(str(buffer), "...hello........");
  try {
    (void)b.recv_bytes_into(buffer, 0);
    ADD_FAILURE() << "BufferTooShort expected";
  } catch (const mpx::BufferTooShort& e) {
    EXPECT_EQ(str(e.message()), "a message longer than the buffer") << "it carries the whole message";
  }
  EXPECT_EQ(str(buffer), "...hello........") << "the buffer is untouched";
  EXPECT_EQ(b.recv_bytes_into(buffer, 0, 1s), std::optional<std::size_t>(4)) << "the next message is intact";
  EXPECT_THROW((void)b.recv_bytes_into(buffer, 17), mpx::ConnectionError);
  EXPECT_EQ(b.recv_bytes_into(buffer, 0, 50ms), std::nullopt);
}

TEST(SocketConnection, PollAndRecvTimeoutsKeepAPartialMessage) {
  auto [a, b] = socket_pair();
  EXPECT_FALSE(b.poll(0s));
  double took = seconds_of([&] { EXPECT_FALSE(b.poll(200ms)); });
  EXPECT_GE(took, 0.19);
  EXPECT_LT(took, 5.0);
  EXPECT_EQ(b.recv_bytes(100ms), std::nullopt);
  // Half a message: neither poll nor recv report it; the rest completes it.
  write_raw(a.fileno(), std::string("\0\0\0\x0a", 4) + "01234");
  EXPECT_FALSE(b.poll(50ms)) << "poll is true for a whole message only";
  EXPECT_EQ(b.recv_bytes(50ms), std::nullopt);
  write_raw(a.fileno(), "56789");
  EXPECT_TRUE(b.poll(10s));
  EXPECT_EQ(str(b.recv_bytes(0s).value()), "0123456789");
  EXPECT_LT(seconds_of([&] { EXPECT_FALSE(b.poll(-1s)); }), 0.5) << "negative: do not wait";
}

TEST(SocketConnection, PythonsLongHeaderIsRead) {
  // -1, then an 8-byte length: Python's header for messages over 0x7fffffff
  // bytes; any length is legal after it.
  auto [a, b] = socket_pair();
  write_raw(a.fileno(), std::string("\xff\xff\xff\xff\0\0\0\0\0\0\0\x05", 12) + "hello");
  EXPECT_EQ(str(b.recv_bytes(10s).value()), "hello");
  std::byte h[12];
  ASSERT_EQ(mpx::detail::frame_header(0x80000000ull, h), 12u);
  EXPECT_EQ(std::string(reinterpret_cast<char*>(h), 12), std::string("\xff\xff\xff\xff\0\0\0\0\x80\0\0\0", 12));
  ASSERT_EQ(mpx::detail::frame_header(0x7fffffff, h), 4u);
  EXPECT_EQ(std::string(reinterpret_cast<char*>(h), 4), "\x7f\xff\xff\xff");
}

TEST(SocketConnection, MalformedLengthIsRefused) {
  auto [a, b] = socket_pair();
  write_raw(a.fileno(), "\xff\xff\xff\xfb");  // -5
  EXPECT_THROW((void)b.recv_bytes(10s), mpx::MessageLengthError);
  EXPECT_TRUE(b.poll(0s)) << "poll answers at once: recv would throw";
  EXPECT_THROW((void)b.recv_bytes(), mpx::MessageLengthError) << "the stream cannot be resynchronised";
}

TEST(SocketConnection, OversizedLengthIsRefused) {
  auto [a, b] = socket_pair();
  b.set_max_message_size(100);
  EXPECT_EQ(b.max_message_size(), 100u);
  a.send_bytes(std::string(100, 'x'));
  EXPECT_EQ(b.recv_bytes(10s)->size(), 100u);
  // A length far larger than anything sent: refused before any memory is spent on it.
  write_raw(a.fileno(), std::string("\xff\xff\xff\xff\x01\0\0\0\0\0\0\0", 12));
  EXPECT_THROW((void)b.recv_bytes(10s), mpx::MessageLengthError);
  EXPECT_THROW((void)b.recv_bytes(10s), mpx::MessageLengthError);
  // Python's recv_bytes(maxlength) on a fresh pair.
  auto [c, d] = socket_pair();
  c.send_bytes("12345");
  EXPECT_THROW((void)d.recv_bytes(std::uint64_t{4}), mpx::MessageLengthError);
}

TEST(SocketConnection, PeerDyingMidMessageIsEOFError) {
  Listener listener(mpx::Family::unix_socket, "k");
  const Address address = listener.address();
  Signal sent;
  Child peer([&] {
    auto c = mpx::Client(address, "k", 10s);
    // A header for 100 bytes, then 10 of them; then the process dies.
    std::string part = std::string("\0\0\0\x64", 4) + "0123456789";
    if (::send(c.fileno(), part.data(), part.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(part.size())) return 2;
    sent.notify();
    ::pause();
    return 0;
  });
  auto c = listener.accept(20s);
  ASSERT_TRUE(c.has_value());
  ASSERT_EQ(sent.wait(), 'x');
  EXPECT_EQ(c->recv_bytes(100ms), std::nullopt) << "10 of 100 bytes: not a message yet";
  peer.kill(SIGKILL);
  EXPECT_EQ(peer.join(), -SIGKILL);
  EXPECT_THROW((void)c->recv_bytes(10s), mpx::EOFError);
  EXPECT_THROW((void)c->recv_bytes(10s), mpx::EOFError) << "and again";
}

TEST(SocketConnection, SendToAClosedPeerIsBrokenPipeWithoutSigpipe) {
  auto [a, b] = socket_pair();
  b.close();
  EXPECT_TRUE(b.closed());
  EXPECT_THROW((void)b.recv_bytes(), mpx::ConnectionError);
  // The first send may still land in the socket buffer on some kernels; one of
  // a few must fail, and the process must not die of SIGPIPE.
  bool broken = false;
  for (int i = 0; i < 3 && !broken; ++i) {
    try {
      a.send_bytes("x");
    } catch (const mpx::BrokenPipeError&) {
      broken = true;
    }
  }
  EXPECT_TRUE(broken);
  EXPECT_THROW((void)a.recv_bytes(1s), mpx::EOFError);
}

TEST(SocketConnection, TimedSendThatWritesPartOfAMessageShutsTheStream) {
  auto [a, b] = socket_pair();
  const std::string big(16 << 20, 'x');  // far more than a socket buffer; nobody reads
  double took = seconds_of([&] { EXPECT_THROW(a.send_bytes(big, 200ms), mpx::SendTimeoutError); });
  EXPECT_GE(took, 0.19);
  EXPECT_LT(took, 5.0);
  EXPECT_THROW(a.send_bytes("more"), mpx::ConnectionError) << "a torn stream refuses further sends";
  // The reader sees the torn message as end of file, never as a short message.
  EXPECT_THROW((void)b.recv_bytes(10s), mpx::EOFError);
}

TEST(SocketConnection, CopiesShareTheSocketAndCloseClosesAll) {
  auto [a, b] = socket_pair();
  SocketConnection copy = a;
  EXPECT_EQ(copy.fileno(), a.fileno());
  copy.send_bytes("via copy");
  EXPECT_EQ(str(b.recv_bytes(1s).value()), "via copy");
  a.close();
  EXPECT_TRUE(copy.closed());
  EXPECT_THROW(copy.send_bytes("x"), mpx::ConnectionError);
  EXPECT_THROW((void)SocketConnection().recv_bytes(), mpx::ConnectionError);
}

TEST(SocketConnection, LargeMessagesCrossProcesses) {
  Listener listener(mpx::Family::inet, "k");
  const Address address = listener.address();
  Child peer([&] {
    auto c = mpx::Client(address, "k", 10s);
    Bytes m = c.recv_bytes();
    c.send_bytes(m);  // echo
    return 0;
  });
  auto c = listener.accept(20s);
  ASSERT_TRUE(c.has_value());
  std::string big(3 << 20, '\0');
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>(i * 131 % 251);
  std::thread sender([&] { c->send_bytes(big, 20s); });  // the echo starts before the send ends
  auto echo = c->recv_bytes(20s);
  sender.join();
  ASSERT_TRUE(echo.has_value());
  EXPECT_TRUE(str(*echo) == big);
  EXPECT_EQ(peer.join(), 0);
}

// ------------------------------------------------------------ interop with Python

namespace {

// A python3 running a script, its stdout and stderr read line by line; killed
// and reaped at destruction if still running.
class PythonPeer {
 public:
  PythonPeer(const std::string& python, const std::string& script, const std::vector<std::string>& args) {
    int out[2];
    if (::pipe2(out, O_CLOEXEC) != 0) throw std::runtime_error("pipe2");
    std::vector<std::string> argv{python, "-c", script};
    argv.insert(argv.end(), args.begin(), args.end());
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("fork");
    if (pid_ == 0) {
      ::dup2(out[1], 1);
      ::dup2(out[1], 2);
      int devnull = ::open("/dev/null", O_RDONLY);
      ::dup2(devnull, 0);
      std::vector<char*> cargv;
      for (auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
      cargv.push_back(nullptr);
      ::execvp(cargv[0], cargv.data());
      ::_exit(127);
    }
    ::close(out[1]);
    fd_ = out[0];
  }
  PythonPeer(const PythonPeer&) = delete;
  PythonPeer& operator=(const PythonPeer&) = delete;
  ~PythonPeer() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    ::close(fd_);
  }
  // The next line it prints, or nullopt at end of output or after `timeout`.
  std::optional<std::string> line(std::chrono::milliseconds timeout = 30s) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    for (;;) {
      if (auto nl = buffer_.find('\n'); nl != std::string::npos) {
        std::string l = buffer_.substr(0, nl);
        buffer_.erase(0, nl + 1);
        return l;
      }
      if (!fill(deadline)) return std::nullopt;
    }
  }
  // Everything else it prints and its exit code (-1000 if it outlives `timeout`).
  int finish(std::string& rest, std::chrono::milliseconds timeout = 30s) {
    auto deadline = std::chrono::steady_clock::now() + timeout;
    while (fill(deadline)) {
    }
    rest = std::exchange(buffer_, "");
    int status = 0;
    while (std::chrono::steady_clock::now() < deadline) {
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
      }
      std::this_thread::sleep_for(10ms);  // output closed: the exit is imminent
    }
    return -1000;
  }

 private:
  bool fill(std::chrono::steady_clock::time_point deadline) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return false;
    char buf[4096];
    ssize_t n = ::read(fd_, buf, sizeof buf);
    if (n <= 0) return false;
    buffer_.append(buf, static_cast<std::size_t>(n));
    return true;
  }
  pid_t pid_ = -1;
  int fd_ = -1;
  std::string buffer_;
};

bool is_modern_python(const std::string& python) {
  auto r = mpx::test::run_program({"/usr/bin/env", python, "-c", "import sys; print(sys.version_info >= (3, 12))"}, 30s);
  return r.exit_code == 0 && r.out == "True\n";
}

// The Python of the system (/usr/bin/python3, whatever its version: 3.11 on
// Debian 12 answers with the legacy HMAC-MD5), and a Python >= 3.12 if there
// is one (SHA-256, the modern protocol): $MPX_TEST_MODERN_PYTHON, one that
// pyenv installed, or python3.13 / python3.12 on PATH.
std::optional<std::string> interpreter(bool modern) {
  if (!modern) return std::string("/usr/bin/python3");
  static const std::optional<std::string> found = [] () -> std::optional<std::string> {
    std::vector<std::string> candidates;
    if (const char* env = std::getenv("MPX_TEST_MODERN_PYTHON")) candidates.emplace_back(env);
    const char* home = std::getenv("HOME");
    const std::string pyenv = std::getenv("PYENV_ROOT") ? std::getenv("PYENV_ROOT") : std::string(home ? home : "/root") + "/.pyenv";
    glob_t g{};
    if (::glob((pyenv + "/versions/3.1[2-9]*/bin/python3").c_str(), 0, nullptr, &g) == 0)
      for (std::size_t i = 0; i < g.gl_pathc; ++i) candidates.emplace_back(g.gl_pathv[i]);
    ::globfree(&g);
    candidates.insert(candidates.end(), {"python3.13", "python3.12"});
    for (const auto& c : candidates)
      if (is_modern_python(c)) return c;
    return std::nullopt;
  }();
  return found;
}

// Python's address from the argv of the scripts: family, then path / name / port.
const char* kPyAddress =
    "import sys, multiprocessing\n"
    "from multiprocessing.connection import Listener, Client\n"
    "family, where, key = sys.argv[1], sys.argv[2], sys.argv[3].encode()\n"
    "if family == 'tcp':\n"
    "    address = ('127.0.0.1', int(where))\n"
    "else:\n"
    "    address = '\\0' + where if family == 'abstract' else where\n";

const char* kPyListener =
    "with Listener(address, authkey=key) as l:\n"
    "    print('port', l.address[1] if family == 'tcp' else 0, flush=True)\n"
    "    try:\n"
    "        with l.accept() as c:\n"
    "            m = c.recv_bytes()\n"
    "            c.send_bytes(b'py:' + m)\n"
    "            c.send_bytes(bytes(range(256)) * 1000)\n"
    "            print('got', m.decode(), flush=True)\n"
    "    except multiprocessing.AuthenticationError as e:\n"
    "        print('AuthenticationError', flush=True)\n";

const char* kPyClient =
    "try:\n"
    "    with Client(address, authkey=key) as c:\n"
    "        c.send_bytes(b'hello from python')\n"
    "        m = c.recv_bytes()\n"
    "        buf = bytearray(4)\n"
    "        try:\n"
    "            c.recv_bytes_into(buf)\n"
    "        except multiprocessing.BufferTooShort as e:\n"
    "            print('BufferTooShort', len(e.args[0]), flush=True)\n"
    "        print('got', m.decode(), flush=True)\n"
    "except multiprocessing.AuthenticationError as e:\n"
    "    print('AuthenticationError', flush=True)\n";

struct InteropCase {
  bool modern;
  Kind kind;
};

std::string where_of(const Address& a, Kind kind) {
  if (kind == Kind::tcp) return std::to_string(a.port());
  return kind == Kind::abstract ? a.path().substr(1) : a.path();
}

}  // namespace

class PythonInterop : public testing::TestWithParam<InteropCase> {
 protected:
  void SetUp() override {
    auto py = interpreter(GetParam().modern);
    if (!py) GTEST_SKIP() << "no Python >= 3.12 on PATH (the system python3 is tested by the other cases)";
    python_ = *py;
  }
  std::string kind() const {
    switch (GetParam().kind) {
      case Kind::path: return "path";
      case Kind::abstract: return "abstract";
      case Kind::tcp: break;
    }
    return "tcp";
  }
  // The address a Python Listener is told to bind (TCP: port 0, reported back).
  std::string python_where() const {
    switch (GetParam().kind) {
      case Kind::path: return unique_path("py");
      case Kind::abstract: return unique_name("pyabs");
      case Kind::tcp: break;
    }
    return "0";
  }
  Address mpx_address(const std::string& where, const std::string& port_line) const {
    switch (GetParam().kind) {
      case Kind::path: return Address::unix_socket(where);
      case Kind::abstract: return Address::abstract(where);
      case Kind::tcp: break;
    }
    return Address::tcp("127.0.0.1", static_cast<std::uint16_t>(std::stoi(port_line.substr(5))));
  }
  std::string python_;
};

TEST_P(PythonInterop, MpxClientTalksToAPythonListener) {
  const std::string where = python_where();
  Unlink cleanup{GetParam().kind == Kind::path ? where : ""};
  PythonPeer py(python_, std::string(kPyAddress) + kPyListener, {kind(), where, "interop key"});
  auto ready = py.line();
  ASSERT_TRUE(ready && ready->starts_with("port ")) << (ready ? *ready : "<no output>");
  auto c = mpx::Client(mpx_address(where, *ready), "interop key", 20s);
  c.send_bytes("hello from mpx");
  EXPECT_EQ(str(c.recv_bytes(20s).value()), "py:hello from mpx");
  Bytes big(256);
  for (int i = 0; i < 256; ++i) big[static_cast<std::size_t>(i)] = std::byte(i);
  auto got = c.recv_bytes(20s);
  ASSERT_TRUE(got.has_value());
  ASSERT_EQ(got->size(), 256000u);
  EXPECT_TRUE(std::equal(big.begin(), big.end(), got->begin()));
  EXPECT_EQ(py.line(), std::optional<std::string>("got hello from mpx"));
  std::string rest;
  EXPECT_EQ(py.finish(rest), 0) << rest;
}

TEST_P(PythonInterop, WrongKeyAgainstAPythonListenerIsRefusedOnBothSides) {
  const std::string where = python_where();
  Unlink cleanup{GetParam().kind == Kind::path ? where : ""};
  PythonPeer py(python_, std::string(kPyAddress) + kPyListener, {kind(), where, "python key"});
  auto ready = py.line();
  ASSERT_TRUE(ready && ready->starts_with("port ")) << (ready ? *ready : "<no output>");
  EXPECT_THROW((void)mpx::Client(mpx_address(where, *ready), "mpx key", 20s), mpx::AuthenticationError);
  EXPECT_EQ(py.line(), std::optional<std::string>("AuthenticationError"));
  std::string rest;
  EXPECT_EQ(py.finish(rest), 0) << rest;
}

TEST_P(PythonInterop, PythonClientTalksToAnMpxListener) {
  Listener listener(fresh_address(GetParam().kind), "interop key");
  PythonPeer py(python_, std::string(kPyAddress) + kPyClient,
                {kind(), where_of(listener.address(), GetParam().kind), "interop key"});
  auto c = listener.accept(30s);
  ASSERT_TRUE(c.has_value());
  EXPECT_EQ(str(c->recv_bytes(20s).value()), "hello from python");
  c->send_bytes("hi python");
  c->send_bytes("too long for four bytes");
  EXPECT_EQ(py.line(), std::optional<std::string>("BufferTooShort 23"));
  EXPECT_EQ(py.line(), std::optional<std::string>("got hi python"));
  std::string rest;
  EXPECT_EQ(py.finish(rest), 0) << rest;
}

TEST_P(PythonInterop, WrongKeyFromAPythonClientIsRefusedOnBothSides) {
  Listener listener(fresh_address(GetParam().kind), "mpx key");
  PythonPeer py(python_, std::string(kPyAddress) + kPyClient,
                {kind(), where_of(listener.address(), GetParam().kind), "python key"});
  EXPECT_THROW((void)listener.accept(30s), mpx::AuthenticationError);
  EXPECT_EQ(py.line(), std::optional<std::string>("AuthenticationError"));
  std::string rest;
  EXPECT_EQ(py.finish(rest), 0) << rest;
}

INSTANTIATE_TEST_SUITE_P(Pythons, PythonInterop,
                         testing::Values(InteropCase{false, Kind::path}, InteropCase{false, Kind::abstract},
                                         InteropCase{false, Kind::tcp}, InteropCase{true, Kind::path},
                                         InteropCase{true, Kind::abstract}, InteropCase{true, Kind::tcp}),
                         [](const testing::TestParamInfo<InteropCase>& info) {
                           return std::string(info.param.modern ? "Python312Plus" : "SystemPython3") +
                                  kind_name(testing::TestParamInfo<Kind>(info.param.kind, info.index));
                         });
