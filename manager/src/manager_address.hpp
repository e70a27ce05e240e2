// "@name" -> abstract Unix address; "host:port" -> TCP (not installed).
#pragma once

#include <cstdint>
#include <string>

#include "mpx/listener.hpp"
#include "mpx/manager_error.hpp"

namespace mpx::detail::manager {

inline Address parse_address(const std::string& text) {
  if (!text.empty() && text[0] == '@') return Address::abstract(text.substr(1));
  const auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size()) {
    throw ManagerError("mpx::Manager: address '" + text + "' is not \"host:port\"");
  }
  unsigned long port = 0;
  try {
    std::size_t used = 0;
    port = std::stoul(text.substr(colon + 1), &used);
    if (used != text.size() - colon - 1) throw std::invalid_argument("trailing characters");
  } catch (const std::exception&) {
    throw ManagerError("mpx::Manager: address '" + text + "' has no valid port");
  }
  if (port > 65535) throw ManagerError("mpx::Manager: address '" + text + "' has no valid port");
  return Address::tcp(text.substr(0, colon), static_cast<std::uint16_t>(port));
}

inline std::string address_text(const Address& a) {
  if (a.family() == Family::unix_socket && a.is_abstract()) {
    std::string out(1, '@');  // not "@" + substr: GCC 12's -Wrestrict misfires on it at -O3
    out.append(a.path(), 1, std::string::npos);
    return out;
  }
  return a.to_string();
}

// A ping through this thread's connection: the server's instance id.
std::uint64_t connect_instance(const Endpoint& ep);

}  // namespace mpx::detail::manager
