// mpx/actors/errors.hpp: what the actor layer throws. Every type is an
// mpx::Error; the actor layer's own ones derive from mpx::actors::ActorError,
// RemoteError and TimeoutError are the library-wide ones of mpx/error.hpp.
//
//   ActorError        misuse and setup failures (bad options, a host that
//                     cannot start, spawn arguments of the wrong types)
//   UnknownActorType  spawn of a type name nobody registered (at the caller, at once)
//   ActorDown         the target actor is gone, or its host process died or
//                     is not running; reason() says which
//   NodeDown          (an ActorDown) the target's node is down, cut off or
//                     not connected (node.hpp); reason() starts "node down"
//   NodeError         a node endpoint failed: listen, connect, handshake,
//                     authentication (a wrong secret or certificate)
//   RemoteError       a handler threw: type() and message() of the exception
//                     (mpx::RemoteError, shared with the other layers)
//   Unhandled         the actor has no handler for the message's type
//   MailboxFull       a send found the target's mailbox at its bound
//   MessageTooLarge   a message larger than the target mailbox accepts
//   mpx::TimeoutError a request's get(timeout) ran out (the request may
//                     still be handled later; its late reply is dropped)
#pragma once

#include <string>

#include "mpx/error.hpp"

namespace mpx::actors {

class ActorError : public Error {
 public:
  using Error::Error;
};

class UnknownActorType : public ActorError {
 public:
  using ActorError::ActorError;
};

class ActorDown : public ActorError {
 public:
  ActorDown(const std::string& what, std::string reason) : ActorError(what), reason_(std::move(reason)) {}
  // "normal", "killed", "exception: <type>: <message>", "noproc",
  // "host died: exit code -9", "host not running", ...
  [[nodiscard]] const std::string& reason() const noexcept { return reason_; }

 private:
  std::string reason_;
};

// The target's node is down or not connected: a request fails with it at
// once, whatever its timeout.
class NodeDown : public ActorDown {
 public:
  using ActorDown::ActorDown;
};

class NodeError : public ActorError {
 public:
  using ActorError::ActorError;
};

// A handler threw (the same type a pool task or a manager method throws).
using RemoteError = mpx::RemoteError;

class Unhandled : public ActorError {
 public:
  using ActorError::ActorError;
};

class MailboxFull : public ActorError {
 public:
  using ActorError::ActorError;
};

class MessageTooLarge : public ActorError {
 public:
  using ActorError::ActorError;
};

}  // namespace mpx::actors
