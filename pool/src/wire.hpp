// pool/src/wire.hpp: the frames between a pool and its workers, over one
// Unix stream socket per worker.
//
//   frame  = u32 body size | u8 kind | body
//   task   = u64 id | u64 invoker | u64 target | arguments (an mpx envelope)
//   result = u64 id | result (an mpx envelope)
//   error  = u64 id | encoded ErrorInfo        (the task threw)
//   ready  = (empty)                           (the initializer ran; tasks may come)
//   init_failed = encoded ErrorInfo            (the initializer threw; the worker exits)
//
// Results come back in the order the worker got the tasks.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>

#include "mpx/serialization.hpp"

namespace mpx::detail::pool {

enum class FrameKind : std::uint8_t { task = 1, result = 2, error = 3, ready = 4, init_failed = 5 };

inline constexpr std::size_t frame_header_size = 5;
// A frame claiming more is corrupt (the largest task or result is bounded by
// the decoder's maximum message size, 64 MiB by default).
inline constexpr std::size_t max_frame_body = std::size_t{1} << 31;

inline void put_u64(Bytes& out, std::uint64_t value) {
  const auto* p = reinterpret_cast<const std::byte*>(&value);
  out.insert(out.end(), p, p + sizeof value);
}

inline std::uint64_t get_u64(std::span<const std::byte> in, std::size_t offset) {
  std::uint64_t value = 0;
  std::memcpy(&value, in.data() + offset, sizeof value);
  return value;
}

// Appends a frame of `kind` whose body is `head_words` followed by `tail`.
inline void append_frame(Bytes& out, FrameKind kind, std::initializer_list<std::uint64_t> head_words,
                         std::span<const std::byte> tail) {
  const auto body = static_cast<std::uint32_t>(head_words.size() * 8 + tail.size());
  const auto* size_bytes = reinterpret_cast<const std::byte*>(&body);
  out.insert(out.end(), size_bytes, size_bytes + sizeof body);
  out.push_back(static_cast<std::byte>(kind));
  for (const auto word : head_words) put_u64(out, word);
  out.insert(out.end(), tail.begin(), tail.end());
}

struct Frame {
  FrameKind kind;
  std::span<const std::byte> body;
};

// Accumulates bytes from a stream and cuts them into frames.
class FrameBuffer {
 public:
  // Room for at least `want` more bytes at the end; where to read into.
  std::span<std::byte> reserve(std::size_t want) {
    compact();
    if (bytes_.size() - end_ < want) bytes_.resize(end_ + want);
    return {bytes_.data() + end_, bytes_.size() - end_};
  }
  void commit(std::size_t n) { end_ += n; }
  // The next complete frame, or nullopt. Throws DecodeError on a corrupt header.
  std::optional<Frame> next() {
    if (end_ - start_ < frame_header_size) return std::nullopt;
    std::uint32_t body = 0;
    std::memcpy(&body, bytes_.data() + start_, sizeof body);
    if (body > max_frame_body) throw DecodeError(DecodeError::Kind::oversize, "mpx::Pool: a frame from the peer is corrupt (size)");
    if (end_ - start_ < frame_header_size + body) {
      wanted_ = frame_header_size + body - (end_ - start_);
      return std::nullopt;
    }
    const auto kind = static_cast<FrameKind>(bytes_[start_ + 4]);
    Frame frame{kind, {bytes_.data() + start_ + frame_header_size, body}};
    start_ += frame_header_size + body;
    wanted_ = 0;
    return frame;
  }
  // Bytes still missing from the frame being received (0 if unknown).
  [[nodiscard]] std::size_t wanted() const { return wanted_; }
  [[nodiscard]] bool has_complete_frame() const {
    if (end_ - start_ < frame_header_size) return false;
    std::uint32_t body = 0;
    std::memcpy(&body, bytes_.data() + start_, sizeof body);
    return end_ - start_ >= frame_header_size + body;
  }

 private:
  // Frames handed out stay valid until the next reserve().
  void compact() {
    if (start_ == 0) return;
    std::memmove(bytes_.data(), bytes_.data() + start_, end_ - start_);
    end_ -= start_;
    start_ = 0;
  }

  Bytes bytes_;
  std::size_t start_ = 0;
  std::size_t end_ = 0;
  std::size_t wanted_ = 0;
};

}  // namespace mpx::detail::pool
