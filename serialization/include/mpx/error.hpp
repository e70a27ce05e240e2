// mpx/error.hpp: the root of mpx's exception hierarchy.
//
// Every error mpx throws on purpose derives from mpx::Error, so a caller can
// catch the whole library in one clause and still tell the cases apart by
// type (DecodeError, TimeoutError, Full, Empty, EOFError, ...). Each layer
// declares its own error types next to the code that throws them.
#pragma once

#include <stdexcept>
#include <string>

namespace mpx {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace mpx
