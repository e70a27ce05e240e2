// The manager's server (not installed): objects, and the loop that serves
// one client connection. Used by the Manager's server process and by
// Manager::serve_forever.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "mpx/detail/manager_protocol.hpp"
#include "mpx/listener.hpp"

namespace mpx::detail::manager {

// Serves clients on every listener until a shutdown request, which ends the
// process with exit code 0 after answering. Never returns.
[[noreturn]] void serve(std::vector<Listener> listeners);

// For the fuzz target (fuzz/manager_request_fuzz.cpp): decodes `bytes` as
// the server's connection loop does (DecodeError for anything malformed) and
// handles the request against a server private to this process, with every
// timeout forced to zero and no client socket. Never blocks.
Response handle_request_bytes(std::span<const std::byte> bytes);

}  // namespace mpx::detail::manager
