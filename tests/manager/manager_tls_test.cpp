// TLS on the manager's TCP transport: objects used over (mutual) TLS from a
// client, a forked child (also one forked while another thread is busy with
// TLS connections) and a forkserver child that got its proxy as an argument;
// a certificate from a foreign CA, a plaintext
// client, a TLS client to a plain server and a wrong key are refused with
// typed errors while the server goes on; a silent raw client delays nobody
// and is dropped in bounded time. Certificates are made now with the openssl
// command (tests/support/test_certificates.hpp). Traffic only to 127.0.0.1.
#include <gtest/gtest.h>

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <exception>
#include <memory>
#include <string>
#include <thread>

#include "child_process.hpp"
#include "mpx/context.hpp"
#include "mpx/listener.hpp"
#include "mpx/manager.hpp"
#include "test_certificates.hpp"

using namespace std::chrono_literals;
using mpx::test::Child;

namespace {

// One PKI for the whole suite: CA "good" signs the server (for 127.0.0.1)
// and a client; CA "rogue" signs a server and a client of its own.
class ManagerTls : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::make_unique<mpx::test::TempDir>();
    mpx::test::make_ca(*dir_, "good");
    mpx::test::make_ca(*dir_, "rogue");
    mpx::test::make_certificate(*dir_, "good", "server", "IP:127.0.0.1,DNS:localhost");
    mpx::test::make_certificate(*dir_, "good", "client");
    mpx::test::make_certificate(*dir_, "rogue", "rogue-server", "IP:127.0.0.1");
    mpx::test::make_certificate(*dir_, "rogue", "rogue-client");
  }
  static void TearDownTestSuite() { dir_.reset(); }

  static std::string file(const std::string& name) { return dir_->file(name); }
  // A server's options: its certificate; with `require_clients`, clients need one from "good".
  static mpx::ManagerTlsOptions server_tls(bool require_clients, const std::string& cert = "server") {
    return {.certificate = file(cert + ".pem"), .key = file(cert + ".key"),
            .cafile = require_clients ? file("good-ca.pem") : std::string(), .passphrase = {}, .server_name = {}};
  }
  // A client's options: trusts `ca`; presents `cert` when not empty.
  static mpx::ManagerTlsOptions client_tls(const std::string& cert = "client", const std::string& ca = "good") {
    return {.certificate = cert.empty() ? std::string() : file(cert + ".pem"),
            .key = cert.empty() ? std::string() : file(cert + ".key"), .cafile = file(ca + "-ca.pem"),
            .passphrase = {}, .server_name = {}};
  }
  static mpx::Manager tls_server(bool require_clients, const std::string& key = "k") {
    return mpx::Manager({.address = "127.0.0.1:0", .authkey = key, .start = true, .tls = server_tls(require_clients)});
  }

  static std::unique_ptr<mpx::test::TempDir> dir_;
};
std::unique_ptr<mpx::test::TempDir> ManagerTls::dir_;

mpx::Address tcp_address(const std::string& text) {
  const auto colon = text.rfind(':');
  return mpx::Address::tcp(text.substr(0, colon), static_cast<std::uint16_t>(std::stoi(text.substr(colon + 1))));
}

// A dict round trip through `r`: proves the connection works end to end.
bool works(mpx::Manager& r) {
  auto d = r.dict<int, int>();
  d.set(1, 2);
  return d.get(1) == 2;
}

}  // namespace

// A forkserver child: its proxy arrives as bytes and must reconnect over TLS
// with the client certificate (the server refuses anything else).
void tls_forkserver_writer(mpx::DictProxy<std::string, int> d) { d.set("forkserver", static_cast<int>(::getpid())); }
MPX_REGISTER_FUNCTION(tls_forkserver_writer);
void forkserver_noop() {}
MPX_REGISTER_FUNCTION(forkserver_noop);

TEST_F(ManagerTls, DictAndListOverMutualTlsFromAClientAndAForkedChild) {
  auto m = tls_server(true);
  auto r = mpx::Manager::connect(m.address(), "k", client_tls());
  auto d = r.dict<std::string, int>({{"a", 1}});
  auto l = r.list<int>({1, 2});
  d.set("b", 2);
  l.append(3);
  EXPECT_EQ(d.get("a"), 1);
  EXPECT_EQ(l.snapshot(), (std::vector<int>{1, 2, 3}));
  // A forked child uses the same proxies: it opens its own TLS connection.
  Child child([&] {
    d.set("child", 42);
    l.append(4);
    return d.get("b") == 2 && l.size() == 4 ? 0 : 1;
  });
  ASSERT_EQ(child.join(), 0);
  EXPECT_EQ(d.get("child"), 42);
  EXPECT_EQ(l.snapshot(), (std::vector<int>{1, 2, 3, 4}));
  // The owner's local proxies and the TLS client's reach the same objects.
  auto local = m.dict<std::string, int>();
  local.set("owner", 7);
  m.publish("shared", local);
  auto seen = r.lookup<mpx::DictProxy<std::string, int>>("shared");
  EXPECT_EQ(seen.get("owner"), 7);
  seen.set("remote", 8);
  EXPECT_EQ(local.get("remote"), 8);
}

TEST_F(ManagerTls, ServeForeverOverTlsWithoutClientCertificatesUntilShutdown) {
  std::uint16_t port = 0;
  {
    mpx::Listener probe(mpx::Address::tcp("127.0.0.1", 0));
    port = probe.address().port();
  }
  const std::string address = "127.0.0.1:" + std::to_string(port);
  const auto tls = server_tls(false);
  Child server([&]() -> int { mpx::Manager::serve_forever(address, "k", tls); });
  // serve_forever binds in the child: retry connecting (bounded) until it listens.
  std::optional<mpx::Manager> r;
  const auto until = std::chrono::steady_clock::now() + 10s;
  while (!r) {
    try {
      r = mpx::Manager::connect(address, "k", client_tls(""));  // trusts the CA, presents no certificate
    } catch (const mpx::ManagerGoneError&) {
      ASSERT_LT(std::chrono::steady_clock::now(), until) << "the server never listened";
      std::this_thread::sleep_for(10ms);
    }
  }
  EXPECT_TRUE(works(*r));
  auto q = r->Queue<std::string>();
  q.put("over tls");
  EXPECT_EQ(q.get(1s), "over tls");
  r->shutdown();
  EXPECT_EQ(server.join(10s), 0);
}

TEST_F(ManagerTls, ClientCertificateFromAForeignCaOrNoneIsRefusedAndOthersGoOn) {
  auto m = tls_server(true);
  try {
    (void)mpx::Manager::connect(m.address(), "k", client_tls("rogue-client"));
    ADD_FAILURE() << "a client certificate from a foreign CA was accepted";
  } catch (const mpx::ManagerTlsError& e) {
    EXPECT_NE(std::string(e.what()).find("127.0.0.1"), std::string::npos) << e.what();
  }
  EXPECT_THROW((void)mpx::Manager::connect(m.address(), "k", client_tls("")), mpx::ManagerTlsError);
  auto r = mpx::Manager::connect(m.address(), "k", client_tls());
  EXPECT_TRUE(works(r));
}

TEST_F(ManagerTls, ClientRefusesAServerCertificateItCannotVerifyOrThatNamesAnotherHost) {
  auto m = tls_server(false);
  try {
    (void)mpx::Manager::connect(m.address(), "k", client_tls("", "rogue"));
    ADD_FAILURE() << "a server certificate from a CA the client does not trust was accepted";
  } catch (const mpx::ManagerTlsError& e) {
    EXPECT_NE(std::string(e.what()).find("certificate"), std::string::npos) << e.what();
  }
  auto other_name = client_tls("");
  other_name.server_name = "manager.example.org";  // not in the certificate
  EXPECT_THROW((void)mpx::Manager::connect(m.address(), "k", other_name), mpx::ManagerTlsError);
  auto by_name = client_tls("");
  by_name.server_name = "localhost";  // in the certificate as a DNS name
  auto r = mpx::Manager::connect(m.address(), "k", by_name);
  EXPECT_TRUE(works(r));
}

TEST_F(ManagerTls, PlaintextClientToTlsServerIsRefusedWhileOthersAreServed) {
  auto m = tls_server(false);
  auto r = mpx::Manager::connect(m.address(), "k", client_tls(""));
  auto d = r.dict<int, int>();
  std::exception_ptr plain_error;
  std::thread plain([&] {
    try {
      (void)mpx::Manager::connect(m.address(), "k");
    } catch (...) {
      plain_error = std::current_exception();
    }
  });
  // While the plaintext client waits to be refused, the TLS client is served.
  for (int i = 0; i < 100; ++i) d.set(i, i);
  EXPECT_EQ(d.size(), 100u);
  plain.join();
  ASSERT_TRUE(plain_error) << "a plaintext client got through to a TLS server";
  EXPECT_THROW(std::rethrow_exception(plain_error), mpx::ManagerTlsError);
  EXPECT_TRUE(works(r));
  auto again = mpx::Manager::connect(m.address(), "k", client_tls(""));
  EXPECT_TRUE(works(again));
}

TEST_F(ManagerTls, TlsClientToPlaintextServerIsRefused) {
  mpx::Manager m({.address = "127.0.0.1:0", .authkey = "k"});
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_THROW((void)mpx::Manager::connect(m.address(), "k", client_tls()), mpx::ManagerTlsError);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 4s);  // refused at once, not by a timeout
  auto r = mpx::Manager::connect(m.address(), "k");
  EXPECT_TRUE(works(r));
}

TEST_F(ManagerTls, WrongAuthkeyInsideTlsIsAuthenticationError) {
  auto m = tls_server(true, "right");
  EXPECT_THROW((void)mpx::Manager::connect(m.address(), "wrong", client_tls()), mpx::AuthenticationError);
  auto r = mpx::Manager::connect(m.address(), "right", client_tls());
  EXPECT_TRUE(works(r));
}

TEST_F(ManagerTls, SilentRawClientsDelayNobodyAndAreDropped) {
  auto tls = tls_server(true);
  mpx::Manager plain({.address = "127.0.0.1:0", .authkey = "k"});
  // Connected, never a byte: neither a TLS hello nor an answer to the challenge.
  std::vector<mpx::SocketConnection> silent;
  for (int i = 0; i < 3; ++i) {
    silent.push_back(mpx::Client(tcp_address(tls.address()), {}, 10s));
    silent.push_back(mpx::Client(tcp_address(plain.address()), {}, 10s));
  }
  const auto t0 = std::chrono::steady_clock::now();
  auto r = mpx::Manager::connect(tls.address(), "k", client_tls());
  auto p = mpx::Manager::connect(plain.address(), "k");
  EXPECT_TRUE(works(r));
  EXPECT_TRUE(works(p));
  // The server gives a client 5 s for the handshake: had the silent ones held
  // the accepting thread, this would have taken that long.
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
  for (auto& c : silent) {
    // A plain server's challenge arrives first; then the end of file.
    EXPECT_THROW(
        {
          for (int i = 0; i < 2; ++i) (void)c.recv_bytes(15s);
        },
        mpx::EOFError)
        << "a silent client was not dropped";
  }
  EXPECT_TRUE(works(r));
  EXPECT_TRUE(works(p));
}

TEST_F(ManagerTls, FilesThatCannotBeLoadedAreTypedErrorsNamingTheFile) {
  auto expect_named = [](auto&& make, const std::string& name) {
    try {
      make();
      ADD_FAILURE() << "no error for " << name;
    } catch (const mpx::ManagerTlsError& e) {
      EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
    }
  };
  const std::string missing = file("missing.pem");
  auto tls = server_tls(false);
  tls.certificate = missing;
  expect_named([&] { mpx::Manager({.address = "127.0.0.1:0", .authkey = "k", .start = false, .tls = tls}); }, missing);
  tls = server_tls(false);
  tls.key = file("client.key");  // another certificate's key
  expect_named([&] { mpx::Manager({.address = "127.0.0.1:0", .authkey = "k", .start = true, .tls = tls}); },
               file("client.key"));
  tls = server_tls(true);
  tls.cafile = missing;
  expect_named([&] { mpx::Manager({.address = "127.0.0.1:0", .authkey = "k", .start = true, .tls = tls}); }, missing);
  auto m = tls_server(false);
  auto client = client_tls("");
  client.cafile = missing;
  expect_named([&] { (void)mpx::Manager::connect(m.address(), "k", client); }, missing);
  // TLS needs a TCP address.
  EXPECT_THROW(mpx::Manager({.address = {}, .authkey = "k", .start = false, .tls = server_tls(false)}),
               mpx::ManagerTlsError);
  EXPECT_TRUE([&] {
    auto r = mpx::Manager::connect(m.address(), "k", client_tls(""));
    return works(r);
  }());
}

TEST_F(ManagerTls, ProxyPassedToAForkserverChildKeepsItsTlsSettings) {
  // The fork server runs before this process knows any TLS settings: the
  // child can only have them from its argument.
  auto ctx = mpx::get_context(mpx::StartMethod::forkserver);
  auto noop = ctx.Process(forkserver_noop);
  noop.start();
  ASSERT_TRUE(noop.join(30s));
  auto m = tls_server(true);  // refuses plaintext and clients without a certificate from "good"
  auto r = mpx::Manager::connect(m.address(), "k", client_tls());
  auto d = r.dict<std::string, int>();
  auto p = ctx.Process(tls_forkserver_writer, d);
  p.start();
  ASSERT_TRUE(p.join(30s)) << "the forkserver child did not finish";
  ASSERT_EQ(p.exitcode(), 0) << "the child could not use the proxy over TLS";
  EXPECT_EQ(d.get("forkserver"), p.pid());
}

TEST_F(ManagerTls, ForkWhileAnotherThreadIsBusyWithTlsConnectionsDoesNotDeadlockTheChild) {
  auto m = tls_server(true);
  auto r = mpx::Manager::connect(m.address(), "k", client_tls());
  auto d = r.dict<int, int>();
  const mpx::Bytes d_bytes = mpx::encode(d);
  std::atomic<bool> stop{false};
  mpx::test::Signal first_round;
  std::exception_ptr busy_error;
  // Opens TLS connections and rebuilds proxies from bytes, over and over:
  // whatever the client keeps per process for TLS is in use at every fork.
  std::thread busy([&] {
    try {
      for (bool first = true; !stop.load(); first = false) {
        auto c = mpx::Manager::connect(m.address(), "k", client_tls());
        if (!works(c)) throw std::runtime_error("a round trip failed");
        for (int i = 0; i < 5000 && !stop.load(); ++i) (void)mpx::decode<mpx::DictProxy<int, int>>(d_bytes);
        if (first) first_round.notify();
      }
    } catch (...) {
      busy_error = std::current_exception();
    }
  });
  struct Stop {
    std::atomic<bool>& stop;
    std::thread& t;
    ~Stop() {
      stop.store(true);
      if (t.joinable()) t.join();
    }
  } stop_busy{stop, busy};
  ASSERT_TRUE(first_round.wait(20s)) << "the busy thread never finished a round";
  for (int i = 0; i < 30; ++i) {
    Child child([&] {
      d.set(i, i);
      return d.get(i) == i ? 0 : 1;
    });
    const int code = child.join(20s);
    ASSERT_EQ(code, 0) << "child " << i << (code == -1000 ? " hung (deadlocked after fork)" : " failed");
    EXPECT_EQ(d.get(i), i);
  }
  stop.store(true);
  busy.join();
  if (busy_error) std::rethrow_exception(busy_error);
}
