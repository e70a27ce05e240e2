// mpx/detail/challenge.hpp: the challenge of mpx/auth.hpp over any stream of
// whole messages, so that a connection other than SocketConnection (the
// manager's TLS transport) runs the very same code, byte for byte. The
// public deliver_challenge / answer_challenge are these over a
// SocketConnection; their contract (mpx/auth.hpp) holds for every stream.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

#include "mpx/detail/deadline.hpp"
#include "mpx/serialization.hpp"  // Bytes

namespace mpx::detail {

// One whole message each way.
class MessageStream {
 public:
  // Sends `message`; throws TimeoutError when it cannot be sent by `deadline`.
  virtual void send(std::string_view message, const Deadline& deadline) = 0;
  // The next message; nullopt when none arrived by `deadline`. A message
  // over `max` bytes throws MessageLengthError.
  virtual std::optional<Bytes> receive(std::uint64_t max, const Deadline& deadline) = 0;

 protected:
  MessageStream() = default;
  MessageStream(const MessageStream&) = default;
  MessageStream& operator=(const MessageStream&) = default;
  ~MessageStream() = default;  // not owned through this interface
};

// deliver_challenge / answer_challenge (mpx/auth.hpp), the whole exchange
// within `deadline` (Deadline::never(): untimed).
void deliver_challenge(MessageStream& stream, std::string_view authkey, const Deadline& deadline);
void answer_challenge(MessageStream& stream, std::string_view authkey, const Deadline& deadline);

}  // namespace mpx::detail
