#include "mpx/detail/demangle.hpp"

#include <cxxabi.h>

#include <cstdlib>
#include <memory>

namespace mpx::detail {

std::string demangle(const char* mangled) {
  int status = 0;
  std::unique_ptr<char, decltype(&std::free)> text(abi::__cxa_demangle(mangled, nullptr, nullptr, &status),
                                                   &std::free);
  return status == 0 && text ? text.get() : mangled;
}

std::string current_exception_type() {
  auto* type = abi::__cxa_current_exception_type();
  return type ? demangle(type->name()) : "unknown";
}

}  // namespace mpx::detail
