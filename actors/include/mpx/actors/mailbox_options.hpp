// mpx/actors/mailbox_options.hpp: how big a host's mailbox is and what a send
// does when it is full.
//
// A host's mailbox is one shared-memory log that every process of the tree
// writes into and the host's gateway thread reads (see docs/actors.md). It is
// bounded twice: by a number of messages waiting (`capacity`) and by the
// bytes of the log (`bytes`, which also caps one message at bytes / 2).
// `policy` says what a send to a mailbox at its message bound does:
//   block        the sender waits until the host takes a message
//                (backpressure); a timed send throws MailboxFull at its
//                timeout, a send_nowait at once. The default.
//   fail         every send throws MailboxFull at once.
//   drop_oldest  the oldest message not yet taken by the host is dropped
//                (counted in Host::dropped()) and the send goes in. Only
//                plain sends are dropped: a request is never dropped (its
//                requester waits for it), so a bound full of requests blocks.
// Replies, spawns, monitors and other control packets are not counted against
// `capacity` and never dropped; only the log's bytes bound them.
// `in_flight` bounds how far the host's gateway runs ahead of its actors:
// messages taken from the log and not yet handled (queued in an actor or in
// its hands). At that bound the gateway stops taking, so messages wait in the
// mailbox, where `capacity` and the policy apply (backpressure reaches the
// senders), and a crash of the host has at most that many to hand over.
// A log whose bytes are exhausted blocks (or fails a timed send) under every
// policy: dropped messages free their bytes only once the host passes them.
#pragma once

#include <cstddef>
#include <utility>

namespace mpx::actors {

enum class MailboxPolicy { block, fail, drop_oldest };

struct MailboxOptions {
  std::size_t capacity = 65536;           // messages waiting (sent, not yet taken by the host)
  std::size_t bytes = std::size_t{64} << 20;  // the log; address space is reserved, pages touched as used
  MailboxPolicy policy = MailboxPolicy::block;
  std::size_t in_flight = 1024;           // taken by the host, not yet handled

  MailboxOptions& with_in_flight(std::size_t value) & {
    in_flight = value;
    return *this;
  }
  MailboxOptions&& with_in_flight(std::size_t value) && { return std::move(with_in_flight(value)); }

  MailboxOptions& with_capacity(std::size_t value) & {
    capacity = value;
    return *this;
  }
  MailboxOptions&& with_capacity(std::size_t value) && { return std::move(with_capacity(value)); }
  MailboxOptions& with_bytes(std::size_t value) & {
    bytes = value;
    return *this;
  }
  MailboxOptions&& with_bytes(std::size_t value) && { return std::move(with_bytes(value)); }
  MailboxOptions& with_policy(MailboxPolicy value) & {
    policy = value;
    return *this;
  }
  MailboxOptions&& with_policy(MailboxPolicy value) && { return std::move(with_policy(value)); }
};

}  // namespace mpx::actors
