// mpx/error.hpp: the root of mpx's exception hierarchy.
//
// Every error mpx throws on purpose derives from mpx::Error, so a caller can
// catch the whole library in one clause and still tell the cases apart by
// type (DecodeError, TimeoutError, Full, Empty, EOFError, ...). Each layer
// declares its own error types next to the code that throws them; the two
// every layer shares live here.
#pragma once

#include <stdexcept>
#include <string>
#include <utility>

namespace mpx {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A timed wait that ran out (Python's TimeoutError / multiprocessing.TimeoutError).
class TimeoutError : public Error {
 public:
  using Error::Error;
};

// Code in another process threw: the original exception's type name and
// message (a pool task, a manager method, an actor's handler).
class RemoteError : public Error {
 public:
  RemoteError(std::string type, std::string message)
      : Error("mpx::RemoteError: " + type + ": " + message), type_(std::move(type)), message_(std::move(message)) {}
  [[nodiscard]] const std::string& type() const noexcept { return type_; }
  [[nodiscard]] const std::string& message() const noexcept { return message_; }

 private:
  std::string type_;
  std::string message_;
};

}  // namespace mpx
