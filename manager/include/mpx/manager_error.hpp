// mpx/manager_error.hpp: the errors of the manager layer (mpx/manager.hpp).
//
// ManagerError: misuse of a manager or a proxy (an unstarted or shut-down
// Manager, a default-constructed proxy, a message over the channel's limit).
// ManagerGoneError: the server process is gone (killed, shut down, or
// unreachable): every proxy call raises it promptly instead of hanging.
// StaleProxyError: a ManagerGoneError for a proxy whose server was replaced by
// a new one at the same address; the object it named died with the old server.
// ManagerTlsError: TLS on a manager's TCP transport failed: a certificate,
// key or CA file that cannot be loaded (the message names the file), a
// handshake refused by either side (a certificate the peer does not trust, a
// server that does not speak TLS), or a plaintext client refused by a TLS
// server. The server goes on serving its other clients.
// KeyError / IndexError: RemoteErrors with those type names, as Python's
// manager re-raises them (catch either the class or RemoteError).
#pragma once

#include <string>

#include "mpx/error.hpp"

namespace mpx {

class ManagerError : public Error {
 public:
  using Error::Error;
};

class ManagerGoneError : public ManagerError {
 public:
  using ManagerError::ManagerError;
};

class StaleProxyError : public ManagerGoneError {
 public:
  using ManagerGoneError::ManagerGoneError;
};

class ManagerTlsError : public ManagerError {
 public:
  using ManagerError::ManagerError;
};

class KeyError : public RemoteError {
 public:
  explicit KeyError(std::string message) : RemoteError("KeyError", std::move(message)) {}
};

class IndexError : public RemoteError {
 public:
  explicit IndexError(std::string message) : RemoteError("IndexError", std::move(message)) {}
};

}  // namespace mpx
