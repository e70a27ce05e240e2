// Manager: starts, reaches and stops the server process (mpx/manager.hpp).
#include "mpx/manager.hpp"

#include <unistd.h>

#include <atomic>
#include <random>

#include "manager_address.hpp"
#include "mpx/listener.hpp"
#include "mpx/logging.hpp"
#include "mpx/process.hpp"
#include "server.hpp"
#include "transport.hpp"

namespace mpx {

namespace {

std::string random_hex(std::size_t bytes) {
  std::random_device rd;
  static constexpr char digits[] = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < bytes; ++i) {
    const auto b = rd() & 0xff;
    out += digits[b >> 4];
    out += digits[b & 15];
  }
  return out;
}

// How long shutdown() waits for the server before it kills it.
constexpr std::chrono::seconds kShutdownGrace{5};

}  // namespace

struct Manager::Server {
  Process process;
};

Manager::Manager(ManagerOptions options) : authkey_(std::move(options.authkey)), tls_(std::move(options.tls)) {
  if (authkey_.empty()) authkey_ = random_hex(32);
  tcp_address_ = std::move(options.address);
  if (tls_.enabled()) {
    if (tcp_address_.empty() || tcp_address_[0] == '@')
      throw ManagerTlsError("mpx::Manager: ManagerOptions::tls needs a TCP address (\"host:port\")");
    (void)detail::manager::TlsContext::server(tls_);  // a file that cannot be loaded fails here, not at start()
  }
  pending_start_ = true;
  if (options.start) start();
}

Manager::Manager(Manager&&) noexcept = default;
Manager& Manager::operator=(Manager&& other) noexcept {
  if (this != &other) {
    Manager old(std::move(*this));  // destroyed (and shut down, if ours) on return
    server_ = std::move(other.server_);
    endpoint_ = std::move(other.endpoint_);
    local_address_ = std::move(other.local_address_);
    tcp_address_ = std::move(other.tcp_address_);
    authkey_ = std::move(other.authkey_);
    tls_ = std::move(other.tls_);
    server_pid_ = std::exchange(other.server_pid_, 0);
    owner_pid_ = std::exchange(other.owner_pid_, 0);
    pending_start_ = std::exchange(other.pending_start_, false);
  }
  return *this;
}

Manager::~Manager() {
  // Only the process that started the server stops it; a connected manager
  // or a forked child's copy just lets go.
  if (!server_ || owner_pid_ != ::getpid()) return;
  try {
    shutdown();
  } catch (const std::exception& e) {
    get_logger()->warn("mpx::Manager: shutdown in the destructor failed: {}", e.what());
  }
}

void Manager::start() {
  if (!pending_start_) throw ManagerError("mpx::Manager: start() on a manager that was already started");
  std::vector<detail::manager::ServedListener> listeners;
  listeners.push_back(
      {Listener(Address::abstract("mpx-manager-" + std::to_string(::getpid()) + "-" + random_hex(8)), {}, 64), authkey_,
       nullptr});
  local_address_ = detail::manager::address_text(listeners.back().listener.address());
  if (!tcp_address_.empty()) {
    auto tls = tls_.enabled() ? detail::manager::TlsContext::server(tls_) : nullptr;
    listeners.push_back({Listener(detail::manager::parse_address(tcp_address_), {}, 64), authkey_, std::move(tls)});
    tcp_address_ = detail::manager::address_text(listeners.back().listener.address());
  }
  // The listeners are bound here, so the address is known and clients may
  // connect as soon as the server runs; the parent closes its copies.
  auto shared = std::make_shared<std::vector<detail::manager::ServedListener>>(std::move(listeners));
  server_ = std::make_unique<Server>(Server{Process(ProcessOptions{}.with_daemon(true).with_name("Manager-server"),
                                                   [shared] { detail::manager::serve(std::move(*shared)); })});
  server_->process.start();
  // The process object keeps the closure (and its copy of `shared`): close
  // this process' sockets now, or a dead server would still seem to listen.
  shared->clear();
  shared.reset();
  pending_start_ = false;
  server_pid_ = server_->process.pid();
  owner_pid_ = ::getpid();
  detail::manager::Endpoint probe(local_address_, authkey_, 0);
  const auto instance = detail::manager::connect_instance(probe);
  endpoint_ = std::make_shared<const detail::manager::Endpoint>(local_address_, authkey_, instance);
}

Manager Manager::connect(const std::string& address, const std::string& authkey) {
  return connect(address, authkey, ManagerTlsOptions{});
}

Manager Manager::connect(const std::string& address, const std::string& authkey, const ManagerTlsOptions& tls) {
  Manager m(ManagerOptions{.address = {}, .authkey = authkey, .start = false});
  m.pending_start_ = false;
  m.authkey_ = authkey;  // even when empty (the constructor would pick a random one)
  detail::manager::parse_address(address);  // ManagerError for a malformed address
  if (tls.enabled() && address[0] == '@')
    throw ManagerTlsError("mpx::Manager: TLS is for a TCP address, not " + address);
  // The endpoint carries the TLS settings: every process that uses one of its
  // proxies (a forked, forkserver or spawned child) connects with them.
  detail::manager::Endpoint probe(address, authkey, 0, tls);
  const auto instance = detail::manager::connect_instance(probe);
  m.endpoint_ = std::make_shared<const detail::manager::Endpoint>(address, authkey, instance, tls);
  (address[0] == '@' ? m.local_address_ : m.tcp_address_) = address;
  return m;
}

void Manager::serve_forever(const std::string& address, const std::string& authkey) {
  serve_forever(address, authkey, ManagerTlsOptions{});
}

void Manager::serve_forever(const std::string& address, const std::string& authkey, const ManagerTlsOptions& tls) {
  std::vector<detail::manager::ServedListener> listeners;
  const auto parsed = detail::manager::parse_address(address);
  if (tls.enabled() && parsed.family() != Family::inet)
    throw ManagerTlsError("mpx::Manager: TLS is for a TCP address, not " + address);
  auto ctx = tls.enabled() ? detail::manager::TlsContext::server(tls) : nullptr;
  listeners.push_back({Listener(parsed, {}, 64), authkey, std::move(ctx)});
  get_logger()->info("mpx::Manager: serving on {}{}", listeners.back().listener.address().to_string(),
                     tls.enabled() ? " (TLS)" : "");
  detail::manager::serve(std::move(listeners));
}

void Manager::shutdown() {
  if (!endpoint_) return;
  const bool owner = server_ && owner_pid_ == ::getpid();
  if (!server_ || owner) {
    detail::manager::Request r;
    r.op = static_cast<std::uint32_t>(Op::shutdown);
    try {
      detail::manager::call(*endpoint_, r);
    } catch (const ManagerGoneError&) {
      // Already gone: nothing to ask.
    }
  }
  endpoint_.reset();
  if (owner) {
    if (!server_->process.join(kShutdownGrace)) {
      get_logger()->warn("mpx::Manager: the server (pid {}) did not exit in {} s; killing it", server_pid_,
                         kShutdownGrace.count());
      server_->process.kill();
      server_->process.join();
    }
  }
  server_.reset();
  server_pid_ = 0;
}

std::string Manager::address() const { return tcp_address_.empty() ? local_address_ : tcp_address_; }

const std::shared_ptr<const detail::manager::Endpoint>& Manager::endpoint() const {
  if (!endpoint_) throw ManagerError("mpx::Manager: the manager is not running (call start(), or it was shut down)");
  return endpoint_;
}

std::uint64_t Manager::make_object(Kind kind, std::vector<Bytes> args, std::string name) {
  detail::manager::Request r;
  r.op = static_cast<std::uint32_t>(Op::create);
  r.args.reserve(args.size() + 1);
  r.args.push_back(encode(static_cast<std::uint32_t>(kind)));
  for (auto& a : args) r.args.push_back(std::move(a));
  r.name = std::move(name);
  return decode<std::uint64_t>(detail::manager::call(*endpoint(), r).value);
}

void Manager::publish(const std::string& name, const detail::manager::ProxyBase& proxy) {
  if (proxy.address() != endpoint()->address) {
    throw ManagerError("mpx::Manager::publish: the proxy belongs to another manager (" + proxy.address() + ")");
  }
  detail::manager::Request r;
  r.op = static_cast<std::uint32_t>(Op::publish);
  r.id = proxy.id();
  r.name = name;
  detail::manager::call(*endpoint(), r);
}

std::uint64_t Manager::lookup_id(const std::string& name) {
  detail::manager::Request r;
  r.op = static_cast<std::uint32_t>(Op::lookup);
  r.name = name;
  return decode<std::uint64_t>(detail::manager::call(*endpoint(), r).value);
}

}  // namespace mpx
