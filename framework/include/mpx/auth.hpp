// mpx/auth.hpp: the HMAC challenge of Python's multiprocessing.connection
// (deliver_challenge / answer_challenge), which Listener and Client run in
// both directions before any message (mpx/listener.hpp).
//
//     mpx::deliver_challenge(c, "key");   // the side that accepted
//     mpx::answer_challenge(c, "key");
//
// Contract (CPython 3.12's protocol, byte for byte; HMAC by OpenSSL)
// - deliver_challenge sends "#CHALLENGE#{sha256}" + 40 random bytes, reads
//   the answer (at most 256 bytes) and checks it: "{digest}" + HMAC(authkey,
//   message) with digest one of md5, sha256, sha384, sha3_256, sha3_384, or a
//   bare 16-byte HMAC-MD5 (what Python <= 3.11 answers). The HMAC covers the
//   "{sha256}" prefix, so a peer cannot pick a weaker digest unnoticed. It
//   answers "#WELCOME#", or "#FAILURE#" and throws AuthenticationError.
// - answer_challenge reads the challenge (at most 256 bytes; it must start
//   with "#CHALLENGE#" and carry at least 20 bytes), answers with
//   "{digest}" + HMAC in the digest the challenge names, or a bare HMAC-MD5
//   for the prefix-less 20-byte challenge of Python <= 3.11, and throws
//   AuthenticationError unless the reply is "#WELCOME#".
// - So both sides of a wrong key throw AuthenticationError, and an mpx end
//   talks to Python 3.12+ (SHA-256) and to Python <= 3.11 (MD5) alike.
// - The timed variants bound the whole exchange and throw TimeoutError
//   (mpx/error.hpp) when the peer does not answer in time. A message over 256
//   bytes throws MessageLengthError; a closed peer EOFError
//   (mpx/socket_connection.hpp); the connection's own limit is not changed.
#pragma once

#include <string_view>

#include "mpx/connection.hpp"
#include "mpx/socket_connection.hpp"

namespace mpx {

// The peer does not know the key, or does not speak the challenge protocol
// (Python's multiprocessing.AuthenticationError).
class AuthenticationError : public ConnectionError {
 public:
  using ConnectionError::ConnectionError;
};

void deliver_challenge(SocketConnection& connection, std::string_view authkey);
void deliver_challenge(SocketConnection& connection, std::string_view authkey, SocketConnection::Timeout timeout);
void answer_challenge(SocketConnection& connection, std::string_view authkey);
void answer_challenge(SocketConnection& connection, std::string_view authkey, SocketConnection::Timeout timeout);

}  // namespace mpx
