#pragma once
// JSON from outside, and JSON going to Postgres.
//
// nlohmann's parser is iterative, but much of what runs on a parsed value recurses: dump(),
// copies, kombu marker unwrapping, Python repr, schema validation, JSONPath. A body nested a few
// hundred thousand levels deep overflows the stack in any of them, so a document from outside
// (a message body, a request body, a crawled page, a config written by another service) is
// parsed through ParseUntrustedJson, which refuses nesting deeper than kMaxJsonDepth first.
// Python's json module stops near 1,000 levels (its recursion limit); nothing real comes close.
//
// Strings in a value may hold bytes that are not UTF-8 (AMQP header strings are raw bytes) or
// U+0000: dump() throws on the first and Postgres' jsonb refuses the second. DumpStorableJson
// writes any value as text that json and jsonb columns accept, and never throws.

#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "core/base/result.hpp"

namespace celeriac {

inline constexpr int kMaxJsonDepth = 512;

// Whether `text` opens more than `max_depth` arrays or objects inside one another (brackets in
// strings do not count). Linear, allocates nothing; for text that is not JSON the answer is
// about its brackets only.
bool JsonNestsDeeperThan(std::string_view text, int max_depth = kMaxJsonDepth);

// Parses `text`: Error kProtocol naming the problem (too deep, or nlohmann's parse error, which
// says where) when it is not JSON nested at most `max_depth` deep.
Result<nlohmann::json> ParseUntrustedJson(std::string_view text, int max_depth = kMaxJsonDepth);
Result<nlohmann::ordered_json> ParseUntrustedOrderedJson(std::string_view text,
                                                         int max_depth = kMaxJsonDepth);

// Whether every string and key of `value` is storable text (core/base/text.hpp).
bool IsStorableJson(const nlohmann::ordered_json& value);
bool IsStorableJson(const nlohmann::json& value);

// `value` as compact JSON text with every string and key made storable
// (EscapeToStorableText: invalid bytes and U+0000 become \xNN). Values that are already storable
// are dumped as they are. Never throws; values nested deeper than kMaxJsonDepth (which
// ParseUntrustedJson never produces) are cut at that depth and the cut marked "...".
std::string DumpStorableJson(const nlohmann::ordered_json& value);
std::string DumpStorableJson(const nlohmann::json& value);

// `value` with every string and key made storable (a copy; cut as DumpStorableJson cuts).
nlohmann::ordered_json StorableJson(const nlohmann::ordered_json& value);

// For error messages that quote a value from outside: storable compact JSON, cut to `max_chars`
// (with "..." when cut).
std::string QuoteJson(const nlohmann::ordered_json& value, size_t max_chars = 200);

}  // namespace celeriac
