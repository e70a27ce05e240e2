// The manager's server (not installed): objects, and the loop that serves
// one client connection. Used by the Manager's server process and by
// Manager::serve_forever.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include <memory>
#include <string>

#include "mpx/detail/manager_protocol.hpp"
#include "mpx/listener.hpp"

namespace mpx::detail::manager {

class TlsContext;

struct ServedListener {
  Listener listener;  // made without a key: each connection's thread runs the challenge
  std::string authkey;
  std::shared_ptr<const TlsContext> tls;  // a TCP listener's; nullptr: plain
};

// Serves clients on every listener until a shutdown request, which ends the
// process with exit code 0 after answering. Never returns. The accepting
// thread only accepts: the TLS handshake, the challenge and the hello run in
// the connection's own thread, bounded, so a silent client delays nobody.
[[noreturn]] void serve(std::vector<ServedListener> listeners);

// For the fuzz target (fuzz/manager_request_fuzz.cpp): decodes `bytes` as
// the server's connection loop does (DecodeError for anything malformed) and
// handles the request against a server private to this process, with every
// timeout forced to zero and no client socket. Never blocks.
Response handle_request_bytes(std::span<const std::byte> bytes);

}  // namespace mpx::detail::manager
