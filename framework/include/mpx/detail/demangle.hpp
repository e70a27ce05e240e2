// mpx/detail/demangle.hpp: readable C++ type names for log lines and errors.
#pragma once

#include <exception>
#include <string>

namespace mpx::detail {

// The demangled form of a typeid name ("std::runtime_error"); the input when
// it cannot be demangled.
[[nodiscard]] std::string demangle(const char* mangled);
// The type of the exception being handled (inside a catch block), or "unknown".
[[nodiscard]] std::string current_exception_type();

}  // namespace mpx::detail
