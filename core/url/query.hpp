#pragma once
// Query strings: "name=value&name=value", as forms and most sites write them. Names and values
// are compared and returned percent-decoded ('+' read as a space); built ones are encoded with
// EncodeComponent.
//
// Pure functions, no I/O; safe from any thread.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace celeriac::url {

// The non-empty '&'-separated arguments of `query` (no '?'), in order, as written.
std::vector<std::string_view> SplitQuery(std::string_view query);

// The first value of argument `name`; "" for a bare "name". nullopt when there is none.
std::optional<std::string> QueryParam(std::string_view query, std::string_view name);

// `url` with argument `name` set to `value`: the first occurrence replaced and later ones
// removed, or appended; empty arguments dropped. The rest of the URL is Parse's form of it.
// nullopt if `url` does not parse.
std::optional<std::string> SetQueryParam(std::string_view url, std::string_view name,
                                         std::string_view value);

// `text` with every byte but RFC 3986's unreserved ones percent-encoded (decode with
// celeriac::PercentDecode, core/base/text.hpp).
std::string EncodeComponent(std::string_view text);

}  // namespace celeriac::url
