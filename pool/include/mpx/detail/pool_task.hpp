// mpx/detail/pool_task.hpp: how a Pool task crosses to a worker and back.
//
// A task is (invoker, target, arguments): the invoker is an instantiation of
// one of the templates below for the target's type, and both are sent as
// code addresses. That is sound because every worker is a fork of this
// program image (directly, or through the fork server, itself forked from
// it): code addresses are the same in all of them. Data never crosses as an
// address: arguments and results are encoded with mpx::encode.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <cereal/types/string.hpp>
#include <cereal/types/tuple.hpp>
#include <cereal/types/vector.hpp>

#include "mpx/serialization.hpp"

namespace mpx::detail::pool {

// Runs a task in a worker: decodes `arguments`, calls the target, encodes the
// result into `result`. Throws what the target threw (a single task); chunk
// invokers catch each item's exception and never throw for it.
using TaskInvoker = void (*)(std::uintptr_t target, std::span<const std::byte> arguments, Bytes& result);

struct ErrorInfo {
  std::string type;
  std::string message;
  template <class A>
  void serialize(A& ar) {
    ar(type, message);
  }
};

// Inside a catch block: the type name and message of the exception in
// flight. Rethrows mpx::SystemExit (mpx::exit in a task ends the worker).
ErrorInfo describe_current_exception();

struct ItemError {
  std::uint64_t index = 0;  // position in the chunk
  ErrorInfo error;
  template <class A>
  void serialize(A& ar) {
    ar(index, error);
  }
};

// The outcome of a chunk: the values of the items that succeeded, in order,
// and the errors of those that did not, by position.
template <class R>
struct ChunkResult {
  std::vector<R> values;
  std::vector<ItemError> errors;
  template <class A>
  void serialize(A& ar) {
    ar(values, errors);
  }
};

struct Unit {
  template <class A>
  void serialize(A&) {}
};

// A target a worker can run: a plain function (sent as its address), or a
// class with no state that the worker default-constructs (captureless
// lambdas, function objects without members).
template <class F>
concept Target = (std::is_pointer_v<F> && std::is_function_v<std::remove_pointer_t<F>>) ||
                 (std::is_class_v<F> && std::is_empty_v<F> && std::is_default_constructible_v<F>);

template <class F>
std::uintptr_t target_address(const F& fn) {
  if constexpr (std::is_pointer_v<F>)
    return reinterpret_cast<std::uintptr_t>(fn);
  else
    return 0;
}

template <class F>
F resolve_target(std::uintptr_t address) {
  if constexpr (std::is_pointer_v<F>)
    return reinterpret_cast<F>(address);
  else
    return F{};
}

template <class F, class... A>
using apply_result_t = std::invoke_result_t<F&, A&...>;

template <class F, class... A>
void invoke_apply(std::uintptr_t target, std::span<const std::byte> arguments, Bytes& result) {
  auto values = decode<std::tuple<A...>>(arguments);
  F fn = resolve_target<F>(target);
  if constexpr (std::is_void_v<apply_result_t<F, A...>>) {
    std::apply(fn, values);
    encode_into(result, Unit{});
  } else {
    encode_into(result, std::decay_t<apply_result_t<F, A...>>(std::apply(fn, values)));
  }
}

// One chunk of map (Spread = false: f(item)) or starmap (Spread = true:
// f(item's tuple elements...)).
template <class F, class Item, bool Spread>
struct ChunkCall {
  static decltype(auto) call(F& fn, Item& item) {
    if constexpr (Spread)
      return std::apply(fn, item);
    else
      return std::invoke(fn, item);
  }
  using Result = std::decay_t<decltype(call(std::declval<F&>(), std::declval<Item&>()))>;
};

template <class F, class Item, bool Spread>
void invoke_chunk(std::uintptr_t target, std::span<const std::byte> arguments, Bytes& result) {
  using Call = ChunkCall<F, Item, Spread>;
  auto items = decode<std::vector<Item>>(arguments);
  F fn = resolve_target<F>(target);
  ChunkResult<typename Call::Result> outcome;
  outcome.values.reserve(items.size());
  for (std::size_t i = 0; i < items.size(); ++i) {
    try {
      outcome.values.push_back(Call::call(fn, items[i]));
    } catch (...) {
      outcome.errors.push_back(ItemError{i, describe_current_exception()});
    }
  }
  encode_into(result, outcome);
}

// Encodes the `count` items from `it` on (advancing it) into `out`, in
// exactly the bytes encode(std::vector<Item>{...}) writes, which the worker's
// invoke_chunk decodes: a chunk goes from the caller's range to the wire
// without a std::vector copy in between.
template <class Item, std::input_iterator It>
void encode_items(Bytes& out, It& it, std::size_t count) {
  using Vector = std::vector<Item>;
  constexpr std::string_view name = type_name<Vector>();
  out.clear();
  out.resize(envelope_header_size);  // sealed below
  const std::uint64_t size_tag = count;
  if constexpr (mpx::detail::is_bitwise_loadable_v<Item>) {
    // The direct encoding: 8-byte count, then the elements' bytes.
    if (count > (max_payload_size - 8) / sizeof(Item))
      mpx::detail::throw_payload_too_large(8 + count * sizeof(Item), name);
    out.resize(envelope_header_size + 8 + count * sizeof(Item));
    std::byte* at = out.data() + envelope_header_size;
    std::memcpy(at, &size_tag, 8);
    at += 8;
    if constexpr (std::contiguous_iterator<It> && std::is_same_v<std::iter_value_t<It>, Item>) {
      if (count != 0) std::memcpy(at, std::to_address(it), count * sizeof(Item));
      it += static_cast<std::iter_difference_t<It>>(count);
    } else {
      for (std::size_t i = 0; i < count; ++i, ++it, at += sizeof(Item)) {
        const Item item(*it);
        std::memcpy(at, &item, sizeof(Item));
      }
    }
  } else {
    out.reserve(envelope_header_size + 8 + count * 16);
    mpx::detail::BytesOutputArchive ar(out, name);
    try {
      ar.enter();  // the vector's own level, as when a std::vector is encoded
      ar(cereal::make_size_tag(static_cast<cereal::size_type>(size_tag)));
      for (std::size_t i = 0; i < count; ++i, ++it) {
        if constexpr (std::is_same_v<std::remove_cvref_t<std::iter_reference_t<It>>, Item>) {
          ar(*it);
        } else {
          const Item item(*it);
          ar(item);
        }
      }
      ar.leave();
    } catch (const cereal::Exception& e) {
      throw EncodeError("mpx::encode<" + std::string(name) + ">: cereal: " + e.what());
    }
  }
  const std::size_t payload = out.size() - envelope_header_size;
  if (payload > max_payload_size) mpx::detail::throw_payload_too_large(payload, name);
  mpx::detail::seal_envelope(out.data(), static_cast<std::uint32_t>(payload), type_tag<Vector>(), 0);
}

template <class I, class... A>
void invoke_initializer(std::uintptr_t target, std::span<const std::byte> arguments, Bytes&) {
  auto values = decode<std::tuple<A...>>(arguments);
  I fn = resolve_target<I>(target);
  std::apply(fn, values);
}

// The parent's side of a task: where its outcome goes. Called on the pool's
// own thread only, one call at a time.
class TaskSink {
 public:
  virtual ~TaskSink() = default;
  // The worker's result bytes for chunk `chunk` (a decode error is the
  // caller's to turn into failed()).
  virtual void succeeded(std::size_t chunk, std::span<const std::byte> result) = 0;
  // The task failed as a whole: the target threw (single tasks), its
  // worker was lost, it timed out, or the pool was terminated.
  virtual void failed(std::size_t chunk, std::exception_ptr error) = 0;
  // A loss that will be retried.
  virtual void retried() {}
};

struct TaskSpec {
  TaskInvoker invoker = nullptr;
  std::uintptr_t target = 0;
  std::shared_ptr<const Bytes> arguments;
  std::shared_ptr<TaskSink> sink;
  std::size_t chunk = 0;
  std::optional<std::chrono::milliseconds> timeout;  // empty: the pool's
  std::optional<int> retries;                        // empty: the pool's
};

}  // namespace mpx::detail::pool
