// Python's connection challenge (see mpx/auth.hpp), after CPython 3.12's
// Lib/multiprocessing/connection.py: deliver_challenge, answer_challenge,
// _create_response, _verify_challenge, _get_digest_name_and_payload.
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/random.h>

#include <cerrno>
#include <cstddef>
#include <optional>
#include <string>

#include "mpx/auth.hpp"
#include "mpx/detail/challenge.hpp"
#include "mpx/detail/deadline.hpp"
#include "mpx/sync_error.hpp"

namespace mpx {
namespace {

using detail::Deadline;
using Timeout = SocketConnection::Timeout;

constexpr std::string_view kChallenge = "#CHALLENGE#";
constexpr std::string_view kWelcome = "#WELCOME#";
constexpr std::string_view kFailure = "#FAILURE#";
constexpr std::size_t kMessageLength = 40;       // random bytes of a challenge (CPython 3.12)
constexpr std::size_t kMd5OnlyMessageLength = 20;  // a challenge of Python <= 3.11
constexpr std::size_t kMd5DigestLength = 16;       // a bare HMAC-MD5 answer of Python <= 3.11
constexpr std::uint64_t kMaxHandshakeMessage = 256;

std::string_view view(const Bytes& b) { return {reinterpret_cast<const char*>(b.data()), b.size()}; }

// Python's _ALLOWED_DIGESTS, with OpenSSL's name for each.
const EVP_MD* digest_by_name(std::string_view name) {
  if (name == "md5") return EVP_md5();
  if (name == "sha256") return EVP_sha256();
  if (name == "sha384") return EVP_sha384();
  if (name == "sha3_256") return EVP_sha3_256();
  if (name == "sha3_384") return EVP_sha3_384();
  return nullptr;
}
constexpr std::size_t kMaxDigestNameLength = 8;  // "sha3_256"

// HMAC(authkey, message) with `md`; nullopt when OpenSSL refuses the digest
// (MD5 in FIPS mode).
std::optional<std::string> hmac(const EVP_MD* md, std::string_view key, std::string_view message) {
  unsigned char out[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  static const unsigned char empty = 0;
  const void* k = key.empty() ? static_cast<const void*>(&empty) : key.data();  // never a null key
  if (!HMAC(md, k, static_cast<int>(key.size()), reinterpret_cast<const unsigned char*>(message.data()),
            message.size(), out, &len))
    return std::nullopt;
  return std::string(reinterpret_cast<const char*>(out), len);
}

std::string printable(std::string_view s) {
  std::string out;
  for (unsigned char c : s.substr(0, 64)) {
    if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[c >> 4];
      out += hex[c & 15];
    }
  }
  return s.size() > 64 ? out + "..." : out;
}

struct DigestAndPayload {
  std::string name;  // empty: the legacy protocol (bare HMAC-MD5)
  std::string_view payload;
};

// Python's _get_digest_name_and_payload.
DigestAndPayload digest_and_payload(std::string_view message) {
  if (message.size() == kMd5OnlyMessageLength || message.size() == kMd5DigestLength) return {"", message};
  if (message.starts_with('{')) {
    const auto curly = message.find('}', 1);
    if (curly != std::string_view::npos && curly <= kMaxDigestNameLength + 1) {
      std::string name(message.substr(1, curly - 1));
      if (digest_by_name(name)) return {name, message.substr(curly + 1)};
    }
  }
  throw AuthenticationError("mpx::AuthenticationError: unsupported message length, missing digest prefix, or "
                            "unsupported digest: '" + printable(message) + "'");
}

// Python's _create_response: "{digest}" + HMAC, or a bare HMAC-MD5 for a legacy challenge.
std::string create_response(std::string_view authkey, std::string_view message) {
  std::string name = digest_and_payload(message).name;
  if (name.empty()) {
    if (auto mac = hmac(EVP_md5(), authkey, message)) return *mac;
    name = "sha256";  // no MD5 here (FIPS): answer in the modern protocol, as Python does
  }
  auto mac = hmac(digest_by_name(name), authkey, message);
  if (!mac) throw AuthenticationError("mpx::AuthenticationError: OpenSSL cannot compute HMAC-" + name);
  return "{" + name + "}" + *mac;
}

// Python's _verify_challenge.
void verify_challenge(std::string_view authkey, std::string_view message, std::string_view response) {
  auto [name, mac] = digest_and_payload(response);
  if (name.empty()) name = "md5";
  auto expected = hmac(digest_by_name(name), authkey, message);
  if (!expected) throw AuthenticationError("mpx::AuthenticationError: digest " + name + " unsupported");
  if (expected->size() != mac.size())
    throw AuthenticationError("mpx::AuthenticationError: expected '" + name + "' of length " +
                              std::to_string(expected->size()) + " got " + std::to_string(mac.size()));
  if (CRYPTO_memcmp(expected->data(), mac.data(), mac.size()) != 0)
    throw AuthenticationError("mpx::AuthenticationError: digest received was wrong");
}

Bytes recv_handshake(detail::MessageStream& s, const Deadline& deadline, const char* waiting_for) {
  auto message = s.receive(kMaxHandshakeMessage, deadline);
  if (!message)
    throw TimeoutError(std::string("mpx::TimeoutError: authentication: the peer did not send ") + waiting_for +
                       " in time");
  return std::move(*message);
}

// A SocketConnection as a MessageStream: its untimed calls for Deadline::never().
class SocketStream final : public detail::MessageStream {
 public:
  explicit SocketStream(SocketConnection& c) : c_(c) {}
  void send(std::string_view message, const Deadline& deadline) override {
    if (auto left = deadline.remaining()) c_.send_bytes(message, Timeout(*left));
    else c_.send_bytes(message);
  }
  std::optional<Bytes> receive(std::uint64_t max, const Deadline& deadline) override {
    if (auto left = deadline.remaining()) return c_.recv_bytes(max, Timeout(*left));
    return c_.recv_bytes(max);
  }

 private:
  SocketConnection& c_;
};

std::string random_bytes(std::size_t n) {
  std::string out(n, '\0');
  std::size_t have = 0;
  while (have < n) {
    ssize_t r = ::getrandom(out.data() + have, n - have, 0);
    if (r < 0) {
      if (errno == EINTR) continue;
      throw OSError(errno, "mpx::deliver_challenge: getrandom");
    }
    have += static_cast<std::size_t>(r);
  }
  return out;
}

}  // namespace

namespace detail {

void deliver_challenge(MessageStream& c, std::string_view authkey, const Deadline& deadline) {
  const std::string message = "{sha256}" + random_bytes(kMessageLength);
  c.send(std::string(kChallenge) + message, deadline);
  const Bytes response = recv_handshake(c, deadline, "its answer to the challenge");
  try {
    verify_challenge(authkey, message, view(response));
  } catch (const AuthenticationError&) {
    c.send(kFailure, deadline);
    throw;
  }
  c.send(kWelcome, deadline);
}

void answer_challenge(MessageStream& c, std::string_view authkey, const Deadline& deadline) {
  const Bytes challenge = recv_handshake(c, deadline, "the challenge");
  std::string_view message = view(challenge);
  if (!message.starts_with(kChallenge))
    throw AuthenticationError("mpx::AuthenticationError: protocol error, expected a challenge: '" +
                              printable(message) + "'");
  message.remove_prefix(kChallenge.size());
  if (message.size() < kMd5OnlyMessageLength)
    throw AuthenticationError("mpx::AuthenticationError: challenge too short: " + std::to_string(message.size()) +
                              " bytes");
  c.send(create_response(authkey, message), deadline);
  const Bytes reply = recv_handshake(c, deadline, "its verdict on our answer");
  if (view(reply) != kWelcome) throw AuthenticationError("mpx::AuthenticationError: digest sent was rejected");
}

}  // namespace detail

void deliver_challenge(SocketConnection& connection, std::string_view authkey) {
  SocketStream s(connection);
  detail::deliver_challenge(s, authkey, Deadline::never());
}
void deliver_challenge(SocketConnection& connection, std::string_view authkey, Timeout timeout) {
  SocketStream s(connection);
  detail::deliver_challenge(s, authkey, Deadline::after(timeout));
}
void answer_challenge(SocketConnection& connection, std::string_view authkey) {
  SocketStream s(connection);
  detail::answer_challenge(s, authkey, Deadline::never());
}
void answer_challenge(SocketConnection& connection, std::string_view authkey, Timeout timeout) {
  SocketStream s(connection);
  detail::answer_challenge(s, authkey, Deadline::after(timeout));
}

}  // namespace mpx
