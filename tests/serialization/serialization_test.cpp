// mpx::encode / mpx::decode: round trips of every type family, every
// DecodeError kind, hostile payloads behind valid envelopes, allocation
// behaviour, type tags across exec, and the CRC-32C implementations.
#include "mpx/serialization.hpp"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cereal/archives/binary.hpp>
#include <chrono>
#include <cmath>
#include <limits>
#include <complex>
#include <cstdio>
#include <cstdlib>
#include <deque>
#include <list>
#include <map>
#include <memory>
#include <new>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <tuple>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <variant>
#include <vector>

#include "test_support.hpp"

// ---- allocation accounting for this test binary: count and largest size.
// The replacement operators pair malloc with free; GCC, seeing new and free
// inlined together, would warn about a mismatch that is not one.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
namespace {
std::atomic<std::size_t> g_alloc_count{0};
std::atomic<std::size_t> g_alloc_largest{0};

void note_allocation(std::size_t n) noexcept {
  g_alloc_count.fetch_add(1, std::memory_order_relaxed);
  std::size_t prev = g_alloc_largest.load(std::memory_order_relaxed);
  while (n > prev && !g_alloc_largest.compare_exchange_weak(prev, n, std::memory_order_relaxed)) {
  }
}
}  // namespace

void* operator new(std::size_t n) {
  note_allocation(n);
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return ::operator new(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }

namespace {

struct AllocationWatch {
  std::size_t count0 = g_alloc_count.load();
  AllocationWatch() { g_alloc_largest.store(0); }
  [[nodiscard]] std::size_t count() const { return g_alloc_count.load() - count0; }
  [[nodiscard]] static std::size_t largest() { return g_alloc_largest.load(); }
};

using mpx::Bytes;
using mpx::DecodeError;
using Kind = mpx::DecodeError::Kind;

// ---- user types
struct Pod {  // trivially copyable, no serialize: travels raw
  std::int64_t id;
  double x, y;
  std::uint32_t flags;
  bool operator==(const Pod&) const = default;
};

struct Inner {
  std::string name;
  std::vector<int> values;
  std::optional<double> weight;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(name, values, weight);
  }
  bool operator==(const Inner&) const = default;
};

struct Outer {
  std::int64_t id = 0;
  std::map<std::string, Inner> by_name;
  std::vector<Inner> list;
  std::variant<std::monostate, int, std::string, Inner> choice;
  std::tuple<int, std::string, std::vector<double>> triple;
  std::unordered_map<int, std::set<std::string>> index;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(id, by_name, list, choice, triple, index);
  }
  bool operator==(const Outer&) const = default;
};

struct Versioned {
  int a = 0;
  int b = 0;
  template <class Archive>
  void serialize(Archive& ar, std::uint32_t version) {
    ar(a);
    if (version >= 2) ar(b);
  }
  bool operator==(const Versioned&) const = default;
};

struct SplitSaveLoad {
  std::string text;
  template <class Archive>
  void save(Archive& ar) const {
    ar(text);
  }
  template <class Archive>
  void load(Archive& ar) {
    ar(text);
  }
  bool operator==(const SplitSaveLoad&) const = default;
};

struct Tree {
  int value = 0;
  std::vector<Tree> children;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(value, children);
  }
  bool operator==(const Tree&) const = default;
};

struct Empty {
  template <class Archive>
  void serialize(Archive&) {}
  bool operator==(const Empty&) const = default;
};

struct ThrowsOnLoad {
  int v = 0;
  template <class Archive>
  void save(Archive& ar) const {
    ar(v);
  }
  template <class Archive>
  void load(Archive& ar) {
    ar(v);
    if (v < 0) throw std::invalid_argument("negative v=" + std::to_string(v));
  }
};

struct NotDefaultConstructiblePod {
  explicit NotDefaultConstructiblePod(int v) : value(v) {}
  int value;
};

enum class Color : std::uint8_t { red, green, blue };

struct ForcedRaw {
  int a = 0;
  int b = 0;
  template <class Archive>
  void serialize(Archive& ar) {
    ar(a, b);
  }
};

}  // namespace

template <>
struct mpx::raw_encoding<ForcedRaw> : std::true_type {};

CEREAL_CLASS_VERSION(Versioned, 2);

namespace {

template <class T>
T round_trip(const T& value) {
  const Bytes bytes = mpx::encode(value);
  return mpx::decode<T>(bytes);
}

template <class T>
Kind decode_error_kind(std::span<const std::byte> bytes, std::size_t max_size = mpx::default_max_message_size()) {
  try {
    (void)mpx::decode<T>(bytes, max_size);
  } catch (const DecodeError& e) {
    EXPECT_NE(std::string(e.what()), "");
    return e.kind();
  }
  ADD_FAILURE() << "decode<" << mpx::type_name<T>() << "> did not throw";
  return Kind::malformed_payload;
}

template <class T>
std::string decode_error_text(std::span<const std::byte> bytes) {
  try {
    (void)mpx::decode<T>(bytes);
  } catch (const DecodeError& e) {
    return e.what();
  }
  return "(no error)";
}

mpx::EnvelopeHeader header_of(const Bytes& b) {
  mpx::EnvelopeHeader h;
  std::memcpy(&h, b.data(), sizeof h);
  return h;
}

void put_header(Bytes& b, const mpx::EnvelopeHeader& h) { std::memcpy(b.data(), &h, sizeof h); }

Bytes payload_of(const Bytes& message) { return Bytes(message.begin() + mpx::envelope_header_size, message.end()); }

// Payload bytes built by hand, little-endian.
struct PayloadBuilder {
  Bytes bytes;
  template <class T>
  PayloadBuilder& put(T v) {
    const auto* p = reinterpret_cast<const std::byte*>(&v);
    bytes.insert(bytes.end(), p, p + sizeof v);
    return *this;
  }
  PayloadBuilder& size(std::uint64_t n) { return put<std::uint64_t>(n); }
};

template <class T>
Bytes sealed(const Bytes& payload) {
  return mpx::detail::make_envelope(mpx::type_tag<T>(), 0, payload);
}

// ======================================================================
// Round trips

TEST(SerializationRoundTrip, Int64TravelsRawInThirtyTwoBytes) {
  const std::int64_t v = -1234567890123456789;
  const Bytes b = mpx::encode(v);
  EXPECT_EQ(b.size(), mpx::envelope_header_size + 8);
  EXPECT_EQ(header_of(b).flags, mpx::envelope_flag_raw);
  EXPECT_EQ(header_of(b).magic, mpx::envelope_magic);
  EXPECT_EQ(header_of(b).type_tag, mpx::type_tag<std::int64_t>());
  EXPECT_EQ(mpx::decode<std::int64_t>(b), v);
}

TEST(SerializationRoundTrip, ArithmeticTypesKeepTheirBits) {
  EXPECT_EQ(round_trip(std::uint8_t{255}), 255);
  EXPECT_EQ(round_trip(-1.5), -1.5);
  EXPECT_EQ(round_trip(std::numeric_limits<double>::infinity()), std::numeric_limits<double>::infinity());
  EXPECT_TRUE(std::isnan(round_trip(std::numeric_limits<double>::quiet_NaN())));
  EXPECT_EQ(round_trip('x'), 'x');
  EXPECT_EQ(round_trip(true), true);
  EXPECT_EQ(round_trip(false), false);
  EXPECT_EQ(round_trip(Color::blue), Color::blue);
  EXPECT_EQ(round_trip(std::byte{0xAB}), std::byte{0xAB});
}

TEST(SerializationRoundTrip, PodStructWithoutSerializeTravelsRaw) {
  const Pod p{42, 1.5, -2.25, 7};
  const Bytes b = mpx::encode(p);
  EXPECT_EQ(b.size(), mpx::envelope_header_size + sizeof(Pod));
  EXPECT_EQ(mpx::decode<Pod>(b), p);
  const std::array<Pod, 3> arr{Pod{1, 2, 3, 4}, Pod{5, 6, 7, 8}, Pod{9, 10, 11, 12}};
  EXPECT_EQ(round_trip(arr), arr);
}

TEST(SerializationRoundTrip, TriviallyCopyableStructWithSerializeGoesThroughCereal) {
  ThrowsOnLoad t;
  t.v = 3;
  EXPECT_EQ(header_of(mpx::encode(t)).flags, 0);
  EXPECT_EQ(round_trip(t).v, 3);
  static_assert(mpx::raw_encoding_v<Pod> && mpx::raw_encoding_v<std::array<Pod, 2>>);
  static_assert(!mpx::raw_encoding_v<ThrowsOnLoad> && !mpx::raw_encoding_v<std::array<ThrowsOnLoad, 2>>);
  static_assert(!mpx::raw_encoding_v<int*> && !mpx::raw_encoding_v<std::string_view> && !mpx::raw_encoding_v<bool>);
  static_assert(!mpx::raw_encoding_v<std::optional<int>> && !mpx::raw_encoding_v<std::variant<int, float>>);
  static_assert(mpx::raw_encoding_v<std::chrono::nanoseconds> && mpx::raw_encoding_v<Color>);
}

TEST(SerializationRoundTrip, RawEncodingCanBeForcedForAStructWithSerialize) {
  EXPECT_EQ(header_of(mpx::encode(ForcedRaw{1, 2})).flags, mpx::envelope_flag_raw);
  EXPECT_EQ(round_trip(ForcedRaw{1, 2}).b, 2);
}

TEST(SerializationRoundTrip, TriviallyCopyableWithoutDefaultConstructor) {
  EXPECT_EQ(round_trip(NotDefaultConstructiblePod{17}).value, 17);
}

TEST(SerializationRoundTrip, Strings) {
  EXPECT_EQ(round_trip(std::string()), "");
  EXPECT_EQ(round_trip(std::string("hello")), "hello");
  std::string with_nuls("a\0b\0c", 5);
  EXPECT_EQ(round_trip(with_nuls), with_nuls);
  const std::string kib(1024, 'k');
  EXPECT_EQ(round_trip(kib), kib);
  EXPECT_EQ(round_trip(std::wstring(L"wide \u00e9")), std::wstring(L"wide \u00e9"));
  EXPECT_TRUE(round_trip(std::u8string(u8"utf-8 \u00e9")) == std::u8string(u8"utf-8 \u00e9"));  // gtest cannot print u8string
}

TEST(SerializationRoundTrip, Vectors) {
  EXPECT_EQ(round_trip(std::vector<double>{}), std::vector<double>{});
  EXPECT_EQ(round_trip(std::vector<double>{1.0, -2.0, 3.5}), (std::vector<double>{1.0, -2.0, 3.5}));
  EXPECT_EQ(round_trip(std::vector<std::string>{"a", "", "ccc"}), (std::vector<std::string>{"a", "", "ccc"}));
  EXPECT_EQ(round_trip(std::vector<bool>{true, false, true}), (std::vector<bool>{true, false, true}));
  const Bytes blob{std::byte{0}, std::byte{1}, std::byte{0xFF}};
  EXPECT_EQ(round_trip(blob), blob);
  EXPECT_EQ(round_trip(std::vector<Color>{Color::red, Color::blue}), (std::vector<Color>{Color::red, Color::blue}));
  std::vector<std::vector<int>> nested{{1, 2}, {}, {3}};
  EXPECT_EQ(round_trip(nested), nested);
}

TEST(SerializationRoundTrip, MapsAndSets) {
  const std::map<std::string, int> m{{"one", 1}, {"two", 2}};
  EXPECT_EQ(round_trip(m), m);
  const std::unordered_map<int, std::string> um{{1, "a"}, {2, "b"}, {3, "c"}};
  EXPECT_EQ(round_trip(um), um);
  const std::set<int> s{3, 1, 2};
  EXPECT_EQ(round_trip(s), s);
  const std::unordered_set<std::string> us{"x", "y"};
  EXPECT_EQ(round_trip(us), us);
  const std::multimap<int, int> mm{{1, 1}, {1, 2}, {2, 3}};
  const auto mm2 = round_trip(mm);  // cereal re-inserts equal keys in reverse order
  EXPECT_EQ((std::multiset<std::pair<int, int>>(mm2.begin(), mm2.end())),
            (std::multiset<std::pair<int, int>>(mm.begin(), mm.end())));
}

TEST(SerializationRoundTrip, Optional) {
  EXPECT_EQ(round_trip(std::optional<int>{}), std::nullopt);
  EXPECT_EQ(round_trip(std::optional<int>{5}), 5);
  EXPECT_EQ(round_trip(std::optional<std::string>{"s"}), "s");
}

TEST(SerializationRoundTrip, VariantEveryAlternative) {
  using V = std::variant<int, std::string, std::vector<double>, Inner>;
  for (const V& v : {V{7}, V{std::string("str")}, V{std::vector<double>{1, 2}}, V{Inner{"n", {1}, 2.0}}}) {
    EXPECT_EQ(round_trip(v), v);
  }
  using Trivial = std::variant<int, double>;  // trivially copyable, still goes through cereal
  EXPECT_EQ(header_of(mpx::encode(Trivial{2.5})).flags, 0);
  EXPECT_EQ(round_trip(Trivial{2.5}), Trivial{2.5});
}

TEST(SerializationRoundTrip, TuplesPairsArrays) {
  const auto t = std::make_tuple(1, std::string("two"), 3.0, std::vector<int>{4});
  EXPECT_EQ(round_trip(t), t);
  const auto p = std::make_pair(std::string("k"), std::vector<std::string>{"v"});
  EXPECT_EQ(round_trip(p), p);
  const std::array<std::string, 2> a{"x", "y"};
  EXPECT_EQ(round_trip(a), a);
}

TEST(SerializationRoundTrip, ChronoAndComplex) {
  using namespace std::chrono_literals;
  EXPECT_EQ(round_trip(1500ms), 1500ms);
  const auto tp = std::chrono::system_clock::time_point(std::chrono::system_clock::duration(123456789));
  EXPECT_EQ(round_trip(tp), tp);
  EXPECT_EQ(round_trip(std::complex<double>(1, -2)), std::complex<double>(1, -2));
  EXPECT_EQ(round_trip(std::vector<std::complex<float>>{{1, 2}, {3, 4}}),
            (std::vector<std::complex<float>>{{1, 2}, {3, 4}}));
}

TEST(SerializationRoundTrip, DequeAndList) {
  EXPECT_EQ(round_trip(std::deque<int>{1, 2, 3}), (std::deque<int>{1, 2, 3}));
  EXPECT_EQ(round_trip(std::list<std::string>{"a", "b"}), (std::list<std::string>{"a", "b"}));
}

TEST(SerializationRoundTrip, SmartPointersKeepSharing) {
  auto u = round_trip(std::make_unique<std::string>("owned"));
  ASSERT_TRUE(u);
  EXPECT_EQ(*u, "owned");
  EXPECT_EQ(round_trip(std::unique_ptr<int>{}), nullptr);
  auto shared = std::make_shared<Inner>(Inner{"shared", {1, 2}, std::nullopt});
  auto pair = round_trip(std::make_pair(shared, shared));
  ASSERT_TRUE(pair.first);
  EXPECT_EQ(pair.first.get(), pair.second.get());
  EXPECT_EQ(*pair.first, *shared);
}

TEST(SerializationRoundTrip, NestedUserStructs) {
  Outer o;
  o.id = 99;
  o.by_name["a"] = Inner{"a", {1, 2, 3}, 0.5};
  o.by_name["b"] = Inner{"b", {}, std::nullopt};
  o.list = {Inner{"x", {9}, 1.0}};
  o.choice = Inner{"c", {4}, std::nullopt};
  o.triple = {1, "t", {2.0, 3.0}};
  o.index[5] = {"five", "cinq"};
  EXPECT_EQ(round_trip(o), o);
}

TEST(SerializationRoundTrip, VersionedAndSplitSaveLoad) {
  EXPECT_EQ(round_trip(Versioned{1, 2}), (Versioned{1, 2}));
  EXPECT_EQ(round_trip(SplitSaveLoad{"split"}), SplitSaveLoad{"split"});
}

TEST(SerializationRoundTrip, RecursiveTreeWithinTheDepthLimit) {
  Tree root{0, {}};
  Tree* node = &root;
  for (int i = 1; i < 100; ++i) {
    node->children.push_back(Tree{i, {}});
    node = &node->children.back();
  }
  EXPECT_EQ(round_trip(root), root);
}

TEST(SerializationFormat, PayloadIsCerealBinaryArchiveFormat) {
  Outer o;
  o.id = 5;
  o.by_name["k"] = Inner{"k", {1, 2}, 3.0};
  o.choice = std::string("s");
  o.triple = {1, "t", {2.0}};
  const Bytes ours = mpx::encode(o);
  std::ostringstream os;
  {
    cereal::BinaryOutputArchive ar(os);
    ar(o);
  }
  const std::string theirs = os.str();
  const Bytes payload = payload_of(ours);
  ASSERT_EQ(payload.size(), theirs.size());
  EXPECT_EQ(std::memcmp(payload.data(), theirs.data(), theirs.size()), 0);

  std::istringstream is(theirs);
  Outer back;
  {
    cereal::BinaryInputArchive ar(is);
    ar(back);
  }
  EXPECT_EQ(back, o);
}

TEST(SerializationFormat, EnvelopeHeaderLayoutIsDocumented) {
  const Bytes b = mpx::encode(std::int32_t{0x01020304});
  ASSERT_EQ(b.size(), 28u);
  auto u8 = [&](std::size_t i) { return std::to_integer<unsigned>(b[i]); };
  EXPECT_EQ(u8(0), 0x4Du);  // 'M'
  EXPECT_EQ(u8(1), 0x50u);  // 'P'
  EXPECT_EQ(u8(2), 0x58u);  // 'X'
  EXPECT_EQ(u8(3), 0x5Eu);  // '^'
  EXPECT_EQ(u8(8), 1u);     // version, little-endian
  EXPECT_EQ(u8(9), 0u);
  EXPECT_EQ(u8(10), 1u);  // flags: raw
  EXPECT_EQ(u8(12), 4u);  // payload size
  std::uint64_t tag = 0;
  std::memcpy(&tag, b.data() + 16, 8);
  EXPECT_EQ(tag, mpx::type_tag<std::int32_t>());
  std::uint32_t crc = 0;
  std::memcpy(&crc, b.data() + 4, 4);
  EXPECT_EQ(crc, mpx::detail::crc32c_portable(b.data() + 8, b.size() - 8));
  EXPECT_EQ(u8(24), 0x04u);  // payload, little-endian
}

TEST(SerializationFormat, ReadEnvelopeHeaderNeedsOnlyTheHeader) {
  const Bytes b = mpx::encode(std::string(100, 'z'));
  const auto h = mpx::read_envelope_header(std::span(b).first(mpx::envelope_header_size));
  EXPECT_EQ(h.payload_size, 108u);
  EXPECT_EQ(h.type_tag, mpx::type_tag<std::string>());
  try {
    (void)mpx::read_envelope_header(std::span(b).first(10));
    ADD_FAILURE() << "no throw";
  } catch (const DecodeError& e) {
    EXPECT_EQ(e.kind(), Kind::truncated);
  }
}

// ======================================================================
// encode_into and allocations

TEST(SerializationAllocation, EncodeIntoReusesCapacityWithoutAllocating) {
  Bytes out;
  out.reserve(4096);
  const auto* data = out.data();
  {
    AllocationWatch watch;
    mpx::encode_into(out, std::int64_t{1});
    mpx::encode_into(out, Pod{1, 2, 3, 4});
    mpx::encode_into(out, 3.25);
    EXPECT_EQ(watch.count(), 0u);
  }
  EXPECT_EQ(out.data(), data);
  EXPECT_EQ(mpx::decode<double>(out), 3.25);
  {
    const std::string s(1000, 's');
    const Inner inner{"n", {1, 2, 3}, 1.0};
    AllocationWatch watch;
    mpx::encode_into(out, s);
    mpx::encode_into(out, inner);
    EXPECT_EQ(watch.count(), 0u) << "the cereal path allocates too";
  }
  EXPECT_EQ(out.data(), data);
  EXPECT_EQ(mpx::decode<Inner>(out).values.size(), 3u);
}

TEST(SerializationAllocation, EncodeIntoReplacesPreviousContent) {
  Bytes out = mpx::encode(std::string(500, 'x'));
  mpx::encode_into(out, std::int16_t{3});
  EXPECT_EQ(out.size(), mpx::envelope_header_size + 2);
  EXPECT_EQ(mpx::decode<std::int16_t>(out), 3);
}

TEST(SerializationAllocation, DecodeOfTrivialTypeDoesNotAllocate) {
  const Bytes b = mpx::encode(Pod{1, 2, 3, 4});
  AllocationWatch watch;
  const Pod p = mpx::decode<Pod>(b);
  EXPECT_EQ(watch.count(), 0u);
  EXPECT_EQ(p.id, 1);
}

// ======================================================================
// Envelope failures

TEST(SerializationDecodeError, TruncatedAtEveryPrefixLength) {
  Outer o;
  o.by_name["k"] = Inner{"k", {1, 2}, 3.0};
  const std::vector<Bytes> messages{mpx::encode(std::int64_t{5}), mpx::encode(std::string("truncate me")),
                                    mpx::encode(o)};
  for (const Bytes& m : messages) {
    const auto tag = header_of(m).type_tag;
    for (std::size_t len = 0; len < m.size(); ++len) {
      const std::span<const std::byte> prefix(m.data(), len);
      Kind kind{};
      if (tag == mpx::type_tag<std::int64_t>()) kind = decode_error_kind<std::int64_t>(prefix);
      else if (tag == mpx::type_tag<std::string>()) kind = decode_error_kind<std::string>(prefix);
      else kind = decode_error_kind<Outer>(prefix);
      ASSERT_EQ(kind, Kind::truncated) << "prefix of " << len << " of " << m.size() << " bytes";
    }
  }
}

TEST(SerializationDecodeError, TruncatedMessageSaysHowManyBytes) {
  const Bytes m = mpx::encode(std::string("abc"));
  const std::string what = decode_error_text<std::string>(std::span(m).first(30));
  EXPECT_NE(what.find("truncated"), std::string::npos) << what;
  EXPECT_NE(what.find("35"), std::string::npos) << what;  // claimed total
  EXPECT_NE(what.find("30"), std::string::npos) << what;  // arrived
}

TEST(SerializationDecodeError, BadMagic) {
  Bytes m = mpx::encode(std::int64_t{5});
  m[0] = std::byte{'X'};
  EXPECT_EQ(decode_error_kind<std::int64_t>(m), Kind::bad_magic);
  Bytes garbage(64, std::byte{0});
  EXPECT_EQ(decode_error_kind<std::int64_t>(garbage), Kind::bad_magic);
}

TEST(SerializationDecodeError, UnsupportedVersion) {
  Bytes m = mpx::encode(std::int64_t{5});
  auto h = header_of(m);
  h.version = 2;
  put_header(m, h);
  EXPECT_EQ(decode_error_kind<std::int64_t>(m), Kind::unsupported_version);
  EXPECT_NE(decode_error_text<std::int64_t>(m).find("version 2"), std::string::npos);
}

TEST(SerializationDecodeError, UnknownFlagsAreUnsupportedVersion) {
  Bytes m = mpx::encode(std::int64_t{5});
  auto h = header_of(m);
  h.flags |= 0x8000;
  put_header(m, h);
  EXPECT_EQ(decode_error_kind<std::int64_t>(m), Kind::unsupported_version);
}

TEST(SerializationDecodeError, WrongTypeDecodingStringAsInt) {
  const Bytes m = mpx::encode(std::string("not an int"));
  EXPECT_EQ(decode_error_kind<int>(m), Kind::wrong_type);
  EXPECT_EQ(decode_error_kind<std::int64_t>(mpx::encode(std::int32_t{1})), Kind::wrong_type);
  EXPECT_EQ(decode_error_kind<Inner>(mpx::encode(Outer{})), Kind::wrong_type);
  const std::string what = decode_error_text<int>(m);
  EXPECT_NE(what.find("wrong_type"), std::string::npos) << what;
}

TEST(SerializationDecodeError, OversizeWhenClaimExceedsTheMaximum) {
  const Bytes m = mpx::encode(std::string(1000, 'o'));
  EXPECT_EQ(decode_error_kind<std::string>(m, 1000), Kind::oversize);
  EXPECT_EQ(mpx::decode<std::string>(m, m.size()).size(), 1000u);  // the limit is inclusive
  EXPECT_EQ(decode_error_kind<std::string>(m, m.size() - 1), Kind::oversize);
}

TEST(SerializationDecodeError, OversizeClaimAboveMaximumAndAboveArrivedIsRefusedWithoutAllocating) {
  Bytes m = mpx::encode(std::string("tiny"));
  auto h = header_of(m);
  h.payload_size = 0xFFFFFFF0u;  // ~4 GiB claimed, 36 bytes arrived
  put_header(m, h);
  AllocationWatch watch;
  EXPECT_EQ(decode_error_kind<std::string>(m), Kind::oversize);
  EXPECT_LT(AllocationWatch::largest(), 4096u);
  const std::string what = decode_error_text<std::string>(m);
  EXPECT_NE(what.find(std::to_string(0xFFFFFFF0u)), std::string::npos) << what;
  EXPECT_NE(what.find(std::to_string(mpx::default_max_message_size())), std::string::npos) << what;
}

TEST(SerializationDecodeError, ClaimAboveArrivedButWithinMaximumIsTruncated) {
  Bytes m = mpx::encode(std::string("tiny"));
  auto h = header_of(m);
  h.payload_size = 1000;
  put_header(m, h);
  EXPECT_EQ(decode_error_kind<std::string>(m), Kind::truncated);
}

TEST(SerializationDecodeError, DefaultMaximumIsProcessWideAndAdjustable) {
  EXPECT_EQ(mpx::default_max_message_size(), std::size_t{64} << 20);
  const Bytes m = mpx::encode(std::string(200, 'm'));
  mpx::set_default_max_message_size(100);
  std::thread other([&] { EXPECT_EQ(decode_error_kind<std::string>(m), Kind::oversize); });
  other.join();
  mpx::set_default_max_message_size(std::size_t{64} << 20);
  EXPECT_EQ(mpx::decode<std::string>(m).size(), 200u);
}

TEST(SerializationDecodeError, ChecksumMismatchForEveryFlippedPayloadByte) {
  Outer o;
  o.by_name["k"] = Inner{"k", {1, 2}, 3.0};
  o.choice = 5;
  const Bytes good = mpx::encode(o);
  for (std::size_t i = mpx::envelope_header_size; i < good.size(); ++i) {
    Bytes bad = good;
    bad[i] ^= std::byte{0x01};
    ASSERT_EQ(decode_error_kind<Outer>(bad), Kind::checksum_mismatch) << "byte " << i;
    bad[i] ^= std::byte{0xFF};
    ASSERT_EQ(decode_error_kind<Outer>(bad), Kind::checksum_mismatch) << "byte " << i;
  }
  const Bytes raw = mpx::encode(std::int64_t{77});
  for (std::size_t i = mpx::envelope_header_size; i < raw.size(); ++i) {
    Bytes bad = raw;
    bad[i] ^= std::byte{0x80};
    ASSERT_EQ(decode_error_kind<std::int64_t>(bad), Kind::checksum_mismatch) << "byte " << i;
  }
}

TEST(SerializationDecodeError, EveryFlippedHeaderByteIsRefused) {
  const Bytes good = mpx::encode(std::string("header"));
  for (std::size_t i = 0; i < mpx::envelope_header_size; ++i) {
    for (unsigned bit = 0; bit < 8; ++bit) {
      Bytes bad = good;
      bad[i] ^= std::byte(1u << bit);
      try {
        (void)mpx::decode<std::string>(bad);
        ADD_FAILURE() << "byte " << i << " bit " << bit << " accepted";
      } catch (const DecodeError&) {
      }
    }
  }
}

TEST(SerializationDecodeError, TrailingBytesAfterTheMessage) {
  Bytes m = mpx::encode(std::int64_t{5});
  m.push_back(std::byte{0});
  EXPECT_EQ(decode_error_kind<std::int64_t>(m), Kind::trailing_bytes);
}

TEST(SerializationDecodeError, TrailingBytesInsideThePayload) {
  Bytes payload = payload_of(mpx::encode(std::string("abc")));
  payload.push_back(std::byte{'!'});
  payload.push_back(std::byte{'!'});
  const Bytes m = sealed<std::string>(payload);
  EXPECT_EQ(decode_error_kind<std::string>(m), Kind::trailing_bytes);
  const std::string what = decode_error_text<std::string>(m);
  EXPECT_NE(what.find("2 bytes left over"), std::string::npos) << what;
}

TEST(SerializationDecodeError, RawPayloadOfTheWrongSize) {
  const Bytes four(4, std::byte{1});
  const Bytes twelve(12, std::byte{1});
  EXPECT_EQ(decode_error_kind<std::int64_t>(
                mpx::detail::make_envelope(mpx::type_tag<std::int64_t>(), mpx::envelope_flag_raw, four)),
            Kind::malformed_payload);
  EXPECT_EQ(decode_error_kind<std::int64_t>(
                mpx::detail::make_envelope(mpx::type_tag<std::int64_t>(), mpx::envelope_flag_raw, twelve)),
            Kind::trailing_bytes);
}

TEST(SerializationDecodeError, RawFlagThatDisagreesWithTheTypeIsMalformed) {
  const Bytes eight(8, std::byte{1});
  EXPECT_EQ(decode_error_kind<std::int64_t>(mpx::detail::make_envelope(mpx::type_tag<std::int64_t>(), 0, eight)),
            Kind::malformed_payload);
  const Bytes cereal_string = payload_of(mpx::encode(std::string("s")));
  EXPECT_EQ(decode_error_kind<std::string>(mpx::detail::make_envelope(mpx::type_tag<std::string>(),
                                                                      mpx::envelope_flag_raw, cereal_string)),
            Kind::malformed_payload);
}

// ======================================================================
// Hostile payloads behind a valid envelope and checksum

TEST(SerializationHostilePayload, BogusVectorLengthFailsFastWithoutAllocating) {
  const Bytes m = sealed<std::vector<double>>(PayloadBuilder{}.size(1'000'000'000).put(1.0).bytes);
  AllocationWatch watch;
  EXPECT_EQ(decode_error_kind<std::vector<double>>(m), Kind::malformed_payload);
  EXPECT_LT(AllocationWatch::largest(), 4096u);
  const std::string what = decode_error_text<std::vector<double>>(m);
  EXPECT_NE(what.find("1000000000"), std::string::npos) << what;
}

TEST(SerializationHostilePayload, BogusLengthUnderAddressSpaceLimitInForkedChild) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  // Both reserve terabytes of address space for their shadow memory; under a
  // 1 GiB RLIMIT_AS their own allocators fail before mpx's code runs.
  GTEST_SKIP() << "RLIMIT_AS and the sanitizer's shadow memory do not mix";
#else
  // Belt and braces: even if some allocation slipped through, the child could
  // not take gigabytes; it reports through its exit code.
  const Bytes m = sealed<std::vector<std::string>>(PayloadBuilder{}.size(1'000'000'000).size(5).bytes);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    rlimit lim{std::size_t{1} << 30, std::size_t{1} << 30};
    ::setrlimit(RLIMIT_AS, &lim);
    try {
      (void)mpx::decode<std::vector<std::string>>(m);
      ::_exit(1);
    } catch (const DecodeError& e) {
      ::_exit(e.kind() == Kind::malformed_payload && std::string(e.what()).find("1000000000") != std::string::npos
                  ? 0
                  : 2);
    } catch (...) {
      ::_exit(3);
    }
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << "child died of signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0);
#endif
}

TEST(SerializationHostilePayload, BogusLengthsOfEveryContainerFamily) {
  const Bytes huge = PayloadBuilder{}.size(std::uint64_t{1} << 40).bytes;
  AllocationWatch watch;
  EXPECT_EQ(decode_error_kind<std::string>(sealed<std::string>(huge)), Kind::malformed_payload);
  EXPECT_EQ(decode_error_kind<std::vector<std::string>>(sealed<std::vector<std::string>>(huge)),
            Kind::malformed_payload);
  EXPECT_EQ(decode_error_kind<std::vector<bool>>(sealed<std::vector<bool>>(huge)), Kind::malformed_payload);
  EXPECT_EQ((decode_error_kind<std::map<int, int>>(sealed<std::map<int, int>>(huge))), Kind::malformed_payload);
  EXPECT_EQ((decode_error_kind<std::unordered_map<int, int>>(sealed<std::unordered_map<int, int>>(huge))),
            Kind::malformed_payload);
  EXPECT_EQ(decode_error_kind<std::unordered_set<int>>(sealed<std::unordered_set<int>>(huge)),
            Kind::malformed_payload);
  EXPECT_EQ(decode_error_kind<std::deque<int>>(sealed<std::deque<int>>(huge)), Kind::malformed_payload);
  EXPECT_EQ(decode_error_kind<std::list<int>>(sealed<std::list<int>>(huge)), Kind::malformed_payload);
  EXPECT_EQ(decode_error_kind<Bytes>(sealed<Bytes>(huge)), Kind::malformed_payload);
  EXPECT_LT(AllocationWatch::largest(), 4096u);
}

TEST(SerializationHostilePayload, UnorderedSetReservesOnlyWhatTheBytesCanFill) {
  // 100000 one-byte keys, all equal: cereal alone would reserve 100000 buckets (800 KB).
  PayloadBuilder b;
  b.size(100000);
  b.bytes.resize(b.bytes.size() + 100000, std::byte{0});
  const Bytes m = sealed<std::unordered_set<std::uint8_t>>(b.bytes);
  AllocationWatch watch;
  const auto set = mpx::decode<std::unordered_set<std::uint8_t>>(m);
  EXPECT_EQ(set.size(), 1u);
  EXPECT_LT(AllocationWatch::largest(), 200000u);
}

TEST(SerializationHostilePayload, LengthThatFitsTheBytesButNotTheElementSizeIsRefused) {
  // 16 payload bytes after the prefix: 16 doubles would need 128.
  const Bytes m = sealed<std::vector<double>>(PayloadBuilder{}.size(16).put(1.0).put(2.0).bytes);
  EXPECT_EQ(decode_error_kind<std::vector<double>>(m), Kind::malformed_payload);
}

TEST(SerializationHostilePayload, ElementCountsBeyondThePayloadSizeAreRefused) {
  // vector<vector<Empty>>: empty elements take no bytes, so only the total
  // element budget stops 4 inner vectors from claiming 40 elements each.
  PayloadBuilder b;
  b.size(4);
  for (int i = 0; i < 4; ++i) b.size(40);
  const Bytes m = sealed<std::vector<std::vector<Empty>>>(b.bytes);
  EXPECT_EQ(decode_error_kind<std::vector<std::vector<Empty>>>(m), Kind::malformed_payload);
}

TEST(SerializationHostilePayload, ContainersOfEmptyTypesAreLimitedByThePayloadSize) {
  // Documented limit: each element is assumed to take at least one byte.
  std::vector<Empty> empties(5);
  EXPECT_EQ(decode_error_kind<std::vector<Empty>>(mpx::encode(empties)), Kind::malformed_payload);
  std::pair<std::vector<Empty>, std::string> padded{std::vector<Empty>(5), "12345678"};
  EXPECT_EQ(round_trip(padded).first.size(), 5u);
}

TEST(SerializationHostilePayload, PayloadEndingEarlyIsMalformed) {
  const Bytes m = sealed<Inner>(PayloadBuilder{}.size(3).put('a').bytes);  // name claims 3 chars, 1 present
  EXPECT_EQ(decode_error_kind<Inner>(m), Kind::malformed_payload);
}

TEST(SerializationHostilePayload, InvalidBoolByteIsRefused) {
  const Bytes m = sealed<std::optional<int>>(PayloadBuilder{}.put<std::uint8_t>(2).bytes);
  EXPECT_EQ(decode_error_kind<std::optional<int>>(m), Kind::malformed_payload);
  const Bytes b = sealed<bool>(PayloadBuilder{}.put<std::uint8_t>(0x7F).bytes);
  EXPECT_EQ(decode_error_kind<bool>(b), Kind::malformed_payload);
}

TEST(SerializationHostilePayload, VariantIndexOutOfRangeIsMalformed) {
  using V = std::variant<int, std::string>;
  EXPECT_EQ(decode_error_kind<V>(sealed<V>(PayloadBuilder{}.put<std::int32_t>(2).put<std::int32_t>(0).bytes)),
            Kind::malformed_payload);
  EXPECT_EQ(decode_error_kind<V>(sealed<V>(PayloadBuilder{}.put<std::int32_t>(-1).put<std::int32_t>(0).bytes)),
            Kind::malformed_payload);
}

TEST(SerializationHostilePayload, UnknownSharedPointerIdIsMalformed) {
  using P = std::shared_ptr<int>;
  EXPECT_EQ(decode_error_kind<P>(sealed<P>(PayloadBuilder{}.put<std::uint32_t>(7).bytes)), Kind::malformed_payload);
}

TEST(SerializationHostilePayload, DeepNestingIsRefusedNotAStackOverflow) {
  PayloadBuilder b;
  for (int i = 0; i < 100000; ++i) b.put<int>(i).size(1);  // value, one child, forever
  const Bytes m = sealed<Tree>(b.bytes);
  EXPECT_EQ(decode_error_kind<Tree>(m), Kind::malformed_payload);
  const std::string what = decode_error_text<Tree>(m);
  EXPECT_NE(what.find("nesting"), std::string::npos) << what;
}

TEST(SerializationHostilePayload, EncodingWhatDecodeWouldRefuseThrowsEncodeError) {
  Tree root;
  Tree* node = &root;
  for (int i = 0; i < 1000; ++i) {
    node->children.emplace_back();
    node = &node->children.back();
  }
  EXPECT_THROW((void)mpx::encode(root), mpx::EncodeError);
}

TEST(SerializationHostilePayload, ExceptionFromUserLoadBecomesDecodeError) {
  ThrowsOnLoad t;
  t.v = -5;
  const Bytes m = mpx::encode(t);
  EXPECT_EQ(decode_error_kind<ThrowsOnLoad>(m), Kind::malformed_payload);
  const std::string what = decode_error_text<ThrowsOnLoad>(m);
  EXPECT_NE(what.find("negative v=-5"), std::string::npos) << what;
  EXPECT_NE(what.find("std::invalid_argument"), std::string::npos) << what;
}

TEST(SerializationHostilePayload, RandomPayloadsBehindValidEnvelopesOnlyThrowDecodeError) {
  std::mt19937_64 rng(12345);
  for (int round = 0; round < 20000; ++round) {
    Bytes payload(rng() % 64);
    for (auto& x : payload) x = std::byte(rng() % 4 == 0 ? rng() : rng() % 3);  // many small numbers
    try {
      (void)mpx::decode<Outer>(sealed<Outer>(payload));
    } catch (const DecodeError&) {
    }
  }
}

// ======================================================================
// Type tags and names

TEST(SerializationTypeTag, DiffersForDifferentTypes) {
  const std::set<std::uint64_t> tags{mpx::type_tag<int>(),
                                     mpx::type_tag<long>(),
                                     mpx::type_tag<unsigned>(),
                                     mpx::type_tag<double>(),
                                     mpx::type_tag<std::string>(),
                                     mpx::type_tag<std::vector<int>>(),
                                     mpx::type_tag<std::vector<long>>(),
                                     mpx::type_tag<std::map<int, int>>(),
                                     mpx::type_tag<Pod>(),
                                     mpx::type_tag<Inner>(),
                                     mpx::type_tag<Outer>()};
  EXPECT_EQ(tags.size(), 11u);
  static_assert(mpx::type_tag<int>() == mpx::type_tag<const int>());
  static_assert(mpx::type_tag<int>() != 0);
}

TEST(SerializationTypeTag, NamesAreTheCompilersSpelling) {
  EXPECT_EQ(mpx::type_name<int>(), "int");
  EXPECT_EQ(mpx::type_name<std::vector<double>>(), "std::vector<double>");
  EXPECT_NE(mpx::type_name<Outer>().find("Outer"), std::string_view::npos);
}

namespace {
// The three tags the exec test compares, as hex text.
std::string probe_tags() {
  char text[80];
  std::snprintf(text, sizeof text, "%llx %llx %llx\n",
                static_cast<unsigned long long>(mpx::type_tag<std::string>()),
                static_cast<unsigned long long>(mpx::type_tag<Outer>()),
                static_cast<unsigned long long>(mpx::type_tag<std::variant<int, Inner>>()));
  return text;
}
// Started again with MPX_TYPE_TAG_PROBE set, this binary prints its tags and
// exits before any test runs (EqualInAnExecdProcessOfTheSameBuild).
[[maybe_unused]] const bool g_type_tag_probe = [] {
  if (!std::getenv("MPX_TYPE_TAG_PROBE")) return false;
  const std::string text = probe_tags();
  [[maybe_unused]] auto n = ::write(1, text.data(), text.size());
  ::_exit(0);
}();

// FNV-1a 64 at run time, written out here: not the library's constexpr one.
std::uint64_t runtime_fnv1a64(std::string_view s) {
  std::uint64_t h = 14695981039346656037ull;
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}
}  // namespace

TEST(SerializationTypeTag, IsFnv1a64OfTheCompilersSpelling) {
  EXPECT_EQ(mpx::type_tag<int>(), 0x2b9fff192bd4c83eull);  // FNV-1a 64 of "int", computed by Python
  EXPECT_EQ(mpx::type_tag<Outer>(), runtime_fnv1a64(mpx::type_name<Outer>()));
  EXPECT_EQ(mpx::type_tag<std::vector<double>>(), runtime_fnv1a64("std::vector<double>"));
}

TEST(SerializationTypeTag, EqualInAnExecdProcessOfTheSameBuild) {
  // A forked child shares the parent's image, so only a fresh exec (its own
  // address-space layout, its own static initialisation) can disagree.
  ASSERT_EQ(::setenv("MPX_TYPE_TAG_PROBE", "1", 1), 0);
  auto r = mpx::test::run_program({"/proc/self/exe"}, std::chrono::seconds(60));
  ::unsetenv("MPX_TYPE_TAG_PROBE");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(r.out, probe_tags());
}

TEST(SerializationTypeTag, MessageEncodedInAChildDecodesInTheParent) {
  int fds[2];
  ASSERT_EQ(::pipe(fds), 0);
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::close(fds[0]);
    Outer o;
    o.id = 4242;
    o.by_name["child"] = Inner{"child", {1, 2, 3}, 9.5};
    const Bytes m = mpx::encode(o);
    const std::uint64_t size = m.size();
    bool ok = ::write(fds[1], &size, sizeof size) == sizeof size;
    ok = ok && ::write(fds[1], m.data(), m.size()) == static_cast<ssize_t>(m.size());
    ::_exit(ok ? 0 : 1);
  }
  ::close(fds[1]);
  std::uint64_t size = 0;
  ASSERT_EQ(::read(fds[0], &size, sizeof size), static_cast<ssize_t>(sizeof size));
  Bytes m(size);
  std::size_t got = 0;
  while (got < size) {
    const ssize_t n = ::read(fds[0], m.data() + got, size - got);
    if (n <= 0) break;
    got += static_cast<std::size_t>(n);
  }
  ::close(fds[0]);
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_EQ(got, size);
  const Outer o = mpx::decode<Outer>(m);
  EXPECT_EQ(o.id, 4242);
  EXPECT_EQ(o.by_name.at("child").weight, 9.5);
}

// ======================================================================
// CRC-32C

TEST(SerializationCrc32c, KnownVector) {
  EXPECT_EQ(mpx::detail::crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(mpx::detail::crc32c_portable("123456789", 9), 0xE3069283u);
  EXPECT_EQ(mpx::detail::crc32c("", 0), 0u);
}

TEST(SerializationCrc32c, HardwareAndTableAgreeOnEveryLengthAndAlignment) {
  std::mt19937 rng(7);
  std::vector<unsigned char> data(70000);
  for (auto& b : data) b = static_cast<unsigned char>(rng());
  for (std::size_t offset = 0; offset < 8; ++offset) {
    for (std::size_t len : {0, 1, 3, 4, 7, 8, 9, 15, 16, 255, 256, 767, 768, 769, 1024, 4096, 24575, 24576, 24577,
                            50000, 69990}) {
      const auto a = mpx::detail::crc32c(data.data() + offset, len);
      const auto b = mpx::detail::crc32c_portable(data.data() + offset, len);
      ASSERT_EQ(a, b) << "offset " << offset << " len " << len;
      const std::size_t cut = len / 3;
      ASSERT_EQ(mpx::detail::crc32c(data.data() + offset + cut, len - cut,
                                    mpx::detail::crc32c_portable(data.data() + offset, cut)),
                a);
    }
  }
  for (std::size_t len = 0; len < 2000; ++len)
    ASSERT_EQ(mpx::detail::crc32c(data.data(), len), mpx::detail::crc32c_portable(data.data(), len)) << len;
}

}  // namespace
