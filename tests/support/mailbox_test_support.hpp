// Helpers of the mailbox tests: bytes from and to text, a segment name of
// this test process, and a mailbox unlinked when the test ends (also when
// an assertion leaves it early).
#pragma once

#include <unistd.h>

#include <cstddef>
#include <memory>
#include <span>
#include <string>

#include "mpx/actors/detail/mailbox.hpp"

namespace mpx::test {

inline std::span<const std::byte> bytes_of(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}
inline std::string text_of(std::span<const std::byte> b) { return {reinterpret_cast<const char*>(b.data()), b.size()}; }
inline std::string unique_name(const char* what) {
  return std::string("mpx-test-") + what + "-" + std::to_string(::getpid());
}

struct MailboxUnlinker {
  std::shared_ptr<mpx::actors::detail::Mailbox> mailbox;
  ~MailboxUnlinker() { mailbox->unlink(); }
};

}  // namespace mpx::test
