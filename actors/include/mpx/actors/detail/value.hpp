// mpx/actors/detail/value.hpp: a message or reply with its type erased.
//
// A Value either borrows the caller's object (a send that is encoded at
// once into another process' mailbox needs no copy) or owns a shared copy
// (a delivery inside this process, which never encodes). The functions
// know the type: encode it, copy it.
#pragma once

#include <cstdint>
#include <memory>
#include <string_view>

#include "mpx/serialization.hpp"

namespace mpx::actors::detail {

struct Value {
  std::uint64_t tag = 0;
  std::string_view type_name;
  const void* object = nullptr;          // borrowed or owned (then == owner.get())
  std::shared_ptr<const void> owner;     // set when the Value owns its object
  void (*encode)(const void*, Bytes&) = nullptr;
  std::shared_ptr<const void> (*clone)(const void*) = nullptr;

  [[nodiscard]] bool empty() const { return object == nullptr; }
  // A Value that owns its object (copies a borrowed one).
  [[nodiscard]] Value owned() const {
    if (owner || !object) return *this;
    Value v = *this;
    v.owner = clone(object);
    v.object = v.owner.get();
    return v;
  }
};

template <class T>
void encode_erased(const void* object, Bytes& out) {
  mpx::encode_into(out, *static_cast<const T*>(object));
}
template <class T>
std::shared_ptr<const void> clone_erased(const void* object) {
  return std::make_shared<const T>(*static_cast<const T*>(object));
}

template <class T>
Value borrow_value(const T& object) {
  return Value{mpx::type_tag<T>(), mpx::type_name<T>(), &object, nullptr, &encode_erased<T>, &clone_erased<T>};
}
template <class T>
Value own_value(T object) {
  auto owner = std::make_shared<const T>(std::move(object));
  const void* raw = owner.get();
  return Value{mpx::type_tag<T>(), mpx::type_name<T>(), raw, std::move(owner), &encode_erased<T>, &clone_erased<T>};
}

// The reply of a handler that returns nothing: request<void> waits for it.
struct Unit {
  template <class A>
  void serialize(A&) {}
};

}  // namespace mpx::actors::detail
