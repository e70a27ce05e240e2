// mpx/actors/errors.hpp: what the actor layer throws. Every type derives from
// mpx::actors::ActorError, itself an mpx::Error.
//
//   ActorError        misuse and setup failures (bad options, a host that
//                     cannot start, spawn arguments of the wrong types)
//   UnknownActorType  spawn of a type name nobody registered (at the caller, at once)
//   ActorDown         the target actor is gone, or its host process died or
//                     is not running; reason() says which
//   RemoteError       a handler threw: type() and message() of the exception
//   Unhandled         the actor has no handler for the message's type
//   MailboxFull       a send found the target's mailbox at its bound
//   MessageTooLarge   a message larger than the target mailbox accepts
//   mpx::TimeoutError a request's get(timeout) ran out (the request may
//                     still be handled later; its late reply is dropped)
#pragma once

#include <string>

#include "mpx/error.hpp"

namespace mpx {

// A timed wait that ran out (Python's TimeoutError / multiprocessing.TimeoutError).
class TimeoutError : public Error {
 public:
  using Error::Error;
};

}  // namespace mpx

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

class RemoteError : public ActorError {
 public:
  RemoteError(std::string type, std::string message)
      : ActorError("mpx::actors::RemoteError: " + type + ": " + message), type_(std::move(type)),
        message_(std::move(message)) {}
  [[nodiscard]] const std::string& type() const noexcept { return type_; }
  [[nodiscard]] const std::string& message() const noexcept { return message_; }

 private:
  std::string type_;
  std::string message_;
};

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
