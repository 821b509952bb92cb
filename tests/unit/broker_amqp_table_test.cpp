// AMQP field tables <-> Headers, checked against the bytes py-amqp writes (no network).
#include <cstdint>
#include <limits>
#include <string>

#include <gtest/gtest.h>

#include "core/broker/amqp_table.hpp"

namespace celeriac::broker {
namespace {

std::string FromHex(const std::string& hex) {
  std::string out;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) {
    out.push_back(static_cast<char>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  }
  return out;
}

std::string ToHex(const std::string& bytes) {
  static const char* digits = "0123456789abcdef";
  std::string out;
  for (unsigned char c : bytes) {
    out.push_back(digits[c >> 4]);
    out.push_back(digits[c & 15]);
  }
  return out;
}

std::string Encode(const Headers& h) {
  Result<std::string> r = EncodeTable(h);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().ToString());
  return r.ok() ? *r : std::string();
}

Headers Decode(const std::string& bytes) {
  Result<Headers> r = DecodeTable(bytes);
  EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().ToString());
  return r.ok() ? *r : Headers();
}

Headers RoundTrip(const Headers& h) { return Decode(Encode(h)); }

// The field kind octet emitted for a value: table {"k": v} is 4 length bytes, key length 1, 'k'.
char KindOf(const Headers& value) {
  Headers h = Headers::object();
  h["k"] = value;
  const std::string bytes = Encode(h);
  return bytes.size() > 6 ? bytes[6] : '?';
}

// Produced by py-amqp 5.1.1 (Debian python3-amqp):
//   /usr/bin/python3 -c "from amqp.serialization import dumps;
//     print(dumps('F', [{'a': 'x', 'n': 1, 't': True, 'z': None}]).hex())"
constexpr const char* kPyAmqpSmall = "000000160161530000000178016e490000000101747401017a56";

TEST(AmqpTable, SmallTableEncodesToPyAmqpBytes) {
  Headers h = Headers::object();
  h["a"] = "x";
  h["n"] = 1;
  h["t"] = true;
  h["z"] = nullptr;
  EXPECT_EQ(ToHex(Encode(h)), kPyAmqpSmall);
}

TEST(AmqpTable, SmallPyAmqpTableDecodes) {
  Headers h = Decode(FromHex(kPyAmqpSmall));
  EXPECT_EQ(h.dump(), R"({"a":"x","n":1,"t":true,"z":null})");
}

// py-amqp: dumps('F', [{'x-expires': 86400000}]) -- the rpc reply queue argument.
TEST(AmqpTable, ReplyQueueExpiresIsInt32LikePyAmqp) {
  Headers h = Headers::object();
  h["x-expires"] = 86400000;
  EXPECT_EQ(ToHex(Encode(h)), "0000000f09782d657870697265734905265c00");
}

// py-amqp: dumps('F', [{'big': 2**40, 'neg': -5, 'negbig': -2**40, 'min': -2**31, 'd': 1.5,
//                       'arr': [1, 's', [None]], 'obj': {'k': False}}])
TEST(AmqpTable, PyAmqpBigIntsArraysAndTablesDecode) {
  Headers h = Decode(FromHex(
      "00000065036269674c0000010000000000036e656749fffffffb066e65676269674cffffff0000000000036d"
      "696e4cffffffff800000000164643ff8000000000000036172724100000011490000000153000000017341000"
      "0000156036f626a4600000004016b7400"));
  EXPECT_EQ(h.dump(),
            R"({"big":1099511627776,"neg":-5,"negbig":-1099511627776,"min":-2147483648,)"
            R"("d":1.5,"arr":[1,"s",[null]],"obj":{"k":false}})");
  EXPECT_TRUE(h["d"].is_number_float());
  EXPECT_TRUE(h["obj"]["k"].is_boolean());
}

// The headers of a Celery 5 task message as py-amqp writes them (Debian's Celery field set plus
// 5.3's): order and types must survive a decode and re-encode byte for byte.
constexpr const char* kPyAmqpCeleryHeaders =
    "0000010e046c616e6753000000027079047461736b530000000870726f6a2e61646402696453000000046631"
    "653206736861646f775603657461560765787069726573560567726f7570560b67726f75705f696e64657856"
    "077265747269657349000000000974696d656c696d69744100000002565607726f6f745f6964530000000466"
    "31653209706172656e745f696456086172677372657072530000000628312c2032290a6b7761726773726570"
    "7253000000027b7d066f726967696e530000000667656e3140680d69676e6f72655f726573756c7474001572"
    "65706c616365645f7461736b5f6e657374696e6749000000000f7374616d7065645f686561646572735606737"
    "4616d70734600000000";

TEST(AmqpTable, CeleryHeadersSurviveDecodeAndReencode) {
  const std::string wire = FromHex(kPyAmqpCeleryHeaders);
  Headers h = Decode(wire);
  ASSERT_TRUE(h.is_object());
  std::string keys;
  for (auto it = h.begin(); it != h.end(); ++it) keys += it.key() + ",";
  EXPECT_EQ(keys,
            "lang,task,id,shadow,eta,expires,group,group_index,retries,timelimit,root_id,"
            "parent_id,argsrepr,kwargsrepr,origin,ignore_result,replaced_task_nesting,"
            "stamped_headers,stamps,");
  EXPECT_EQ(h["task"], "proj.add");
  EXPECT_EQ(h["timelimit"].dump(), "[null,null]");
  EXPECT_TRUE(h["stamps"].is_object());
  EXPECT_EQ(ToHex(Encode(h)), ToHex(wire));
}

TEST(AmqpTable, EveryJsonKindRoundTrips) {
  Headers h = Headers::object();
  h["s"] = "text ünïcode";
  h["empty"] = "";
  h["t"] = true;
  h["f"] = false;
  h["i"] = 42;
  h["neg"] = -42;
  h["d"] = 3.25;
  h["negd"] = -0.5;
  h["null"] = nullptr;
  h["arr"] = Headers::array({1, "two", nullptr, 2.5, false});
  h["emptyarr"] = Headers::array();
  h["obj"] = Headers::object();
  h["obj"]["inner"] = Headers::array({Headers::object({{"deep", Headers::array({1, 2})}})});
  h["emptyobj"] = Headers::object();
  Headers back = RoundTrip(h);
  EXPECT_EQ(back.dump(), h.dump());
  EXPECT_TRUE(back["d"].is_number_float());
  EXPECT_TRUE(back["i"].is_number_integer());
  EXPECT_TRUE(back["emptyobj"].is_object());
  EXPECT_TRUE(back["emptyarr"].is_array());
}

TEST(AmqpTable, KeyOrderIsPreserved) {
  Headers h = Headers::object();
  for (const char* k : {"zeta", "alpha", "mu", "beta", "omega", "a"}) h[k] = k;
  Headers back = RoundTrip(h);
  std::string keys;
  for (auto it = back.begin(); it != back.end(); ++it) keys += it.key() + " ";
  EXPECT_EQ(keys, "zeta alpha mu beta omega a ");
}

TEST(AmqpTable, StringsBoolsDoublesNullsUseThePyAmqpKinds) {
  EXPECT_EQ(KindOf("x"), 'S');
  EXPECT_EQ(KindOf(true), 't');
  EXPECT_EQ(KindOf(1.5), 'd');
  EXPECT_EQ(KindOf(nullptr), 'V');
  EXPECT_EQ(KindOf(Headers::array()), 'A');
  EXPECT_EQ(KindOf(Headers::object()), 'F');
}

TEST(AmqpTable, IntegersUseInt32ThenSignedRules) {
  using L = std::numeric_limits<int32_t>;
  using LL = std::numeric_limits<int64_t>;
  EXPECT_EQ(KindOf(0), 'I');
  EXPECT_EQ(KindOf(-1), 'I');
  EXPECT_EQ(KindOf(int64_t{L::max()}), 'I');
  EXPECT_EQ(KindOf(int64_t{L::min()}), 'I');
  EXPECT_EQ(KindOf(uint64_t{2147483647}), 'I');  // parsed JSON numbers are unsigned
  // Beyond int32: 'l' when non-negative (py-amqp reads it unsigned: same value)...
  EXPECT_EQ(KindOf(int64_t{L::max()} + 1), 'l');
  EXPECT_EQ(KindOf(uint64_t{2147483648u}), 'l');
  EXPECT_EQ(KindOf(LL::max()), 'l');
  EXPECT_EQ(KindOf(std::numeric_limits<uint64_t>::max()), 'l');
  // ...and 'L' when negative (py-amqp writes and reads it as signed 64).
  EXPECT_EQ(KindOf(int64_t{L::min()} - 1), 'L');
  EXPECT_EQ(KindOf(LL::min()), 'L');
}

TEST(AmqpTable, IntegerBoundariesRoundTrip) {
  using L = std::numeric_limits<int32_t>;
  using LL = std::numeric_limits<int64_t>;
  const int64_t values[] = {0,
                            1,
                            -1,
                            L::max(),
                            int64_t{L::max()} + 1,
                            L::min(),
                            int64_t{L::min()} - 1,
                            LL::max(),
                            LL::min(),
                            LL::min() + 1,
                            -1099511627776};
  for (int64_t v : values) {
    Headers h = Headers::object();
    h["v"] = v;
    Headers back = RoundTrip(h);
    ASSERT_TRUE(back["v"].is_number_integer()) << v;
    EXPECT_EQ(back["v"].get<int64_t>(), v);
  }
  Headers h = Headers::object();
  h["u"] = std::numeric_limits<uint64_t>::max();
  Headers back = RoundTrip(h);
  ASSERT_TRUE(back["u"].is_number_unsigned());
  EXPECT_EQ(back["u"].get<uint64_t>(), std::numeric_limits<uint64_t>::max());
}

TEST(AmqpTable, ParsedJsonRoundTripsToTheSameText) {
  const std::string text =
      R"({"b":9223372036854775807,"c":-9223372036854775808,"d":[1,[2,[3,{"e":null}]]],)"
      R"("f":{"g":{"h":"i"}},"j":1e+100})";
  Headers h = Headers::parse(text);
  EXPECT_EQ(RoundTrip(h).dump(), h.dump());
}

TEST(AmqpTable, OtherKindsDecodeLikePyAmqp) {
  // Hand-built tables of the kinds py-amqp never writes but other clients (and RabbitMQ) may.
  struct Case {
    const char* hex;
    const char* json;
  };
  const Case cases[] = {
      {"62" "fe", R"({"k":-2})"},                                  // b int8
      {"42" "fe", R"({"k":254})"},                                 // B uint8
      {"73" "fffe", R"({"k":-2})"},                                // s int16
      {"75" "fffe", R"({"k":65534})"},                             // u uint16
      {"69" "fffffffe", R"({"k":4294967294})"},                    // i uint32
      {"4c" "fffffffffffffffe", R"({"k":-2})"},                    // L: signed
      {"6c" "fffffffffffffffe", R"({"k":18446744073709551614})"},  // l: unsigned, as py-amqp
      {"6c" "0000000000000005", R"({"k":5})"},
      {"66" "3fc00000", R"({"k":1.5})"},                           // f float
      {"44" "02" "fffffed4", R"({"k":-3.0})"},                     // D decimal -300e-2
      {"54" "0000000065000000", R"({"k":1694498816})"},            // T timestamp
      {"78" "00000002" "6869", R"({"k":"hi"})"},                   // x bytes
  };
  for (const Case& c : cases) {
    // One entry: key length 1, key "k", then the kind octet and its value.
    const std::string entry = FromHex(std::string("016b") + c.hex);
    std::string table = FromHex("000000");
    table.push_back(static_cast<char>(entry.size()));
    Result<Headers> h = DecodeTable(table + entry);
    ASSERT_TRUE(h.ok()) << c.hex << ": " << h.error().ToString();
    EXPECT_EQ(h->dump(), c.json) << c.hex;
  }
}

TEST(AmqpTable, RepeatedKeyKeepsFirstPlaceAndLastValue) {
  // {"a": 1, "b": 2, "a": 3} on the wire, as a Python dict would read it.
  Headers h = Decode(FromHex("00000018" "0161" "4900000001" "0162" "4900000002" "0161" "4900000003"
                             "0163" "56"));
  EXPECT_EQ(h.dump(), R"({"a":3,"b":2,"c":null})");
}

TEST(AmqpTable, RejectsWhatCannotBeSent) {
  EXPECT_EQ(EncodeTable(Headers::array()).error().code(), ErrorCode::kInvalidArgument);
  EXPECT_EQ(EncodeTable(Headers("text")).error().code(), ErrorCode::kInvalidArgument);
  Headers long_key = Headers::object();
  long_key[std::string(256, 'k')] = 1;
  EXPECT_EQ(EncodeTable(long_key).error().code(), ErrorCode::kInvalidArgument);
  Headers ok_key = Headers::object();
  ok_key[std::string(255, 'k')] = 1;
  EXPECT_TRUE(EncodeTable(ok_key).ok());
  Headers deep = Headers::object();
  Headers* cur = &deep;
  for (int i = 0; i < kMaxTableDepth + 1; ++i) {
    (*cur)["n"] = Headers::object();
    cur = &(*cur)["n"];
  }
  EXPECT_EQ(EncodeTable(deep).error().code(), ErrorCode::kInvalidArgument);
}

TEST(AmqpTable, RejectsBadBytes) {
  const std::string good = FromHex(kPyAmqpSmall);
  EXPECT_EQ(DecodeTable(good.substr(0, good.size() - 1)).error().code(), ErrorCode::kProtocol);
  EXPECT_EQ(DecodeTable(good + "x").error().code(), ErrorCode::kProtocol);
  EXPECT_EQ(DecodeTable("").error().code(), ErrorCode::kProtocol);
  EXPECT_EQ(DecodeTable(FromHex("00000003016b3f")).error().code(), ErrorCode::kProtocol);  // '?'
}

TEST(AmqpTable, EmptyTableIsFourZeroBytes) {
  EXPECT_EQ(ToHex(Encode(Headers::object())), "00000000");
  EXPECT_EQ(Decode(FromHex("00000000")).dump(), "{}");
}

TEST(AmqpTable, LargeTableGrowsTheBuffer) {
  Headers h = Headers::object();
  for (int i = 0; i < 500; ++i) h["key" + std::to_string(i)] = std::string(100, 'v');
  EXPECT_EQ(RoundTrip(h).dump(), h.dump());
}

}  // namespace
}  // namespace celeriac::broker
