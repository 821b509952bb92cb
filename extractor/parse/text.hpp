#pragma once
// Text helpers shared by extraction and the field pipeline. All work on UTF-8 and never
// produce invalid UTF-8 from valid input.
//
// Whitespace, for trim and normalize_space, is ASCII whitespace plus U+00A0 (no-break space,
// common in prices and from &nbsp;).

#include <string>
#include <string_view>

#include "core/base/text.hpp"  // Trim, AsciiLower, IsValidUtf8, SanitizeUtf8, AppendUtf8

namespace celeriac::extractor::parse {

std::string NormalizeSpace(std::string_view s);
// Appends `s` to `out` collapsing whitespace runs into one space; `pending_space` carries a
// run across calls (so text split over several nodes collapses as one). Leading whitespace of
// `out` is never emitted.
void AppendCollapsed(std::string_view s, std::string* out, bool* pending_space);


// Tags and comments removed, character references (&amp; &#233; &#xE9; and the common named
// ones) decoded.
std::string StripTags(std::string_view html);
std::string DecodeEntities(std::string_view text);

// `bytes` in `charset` (a label as found in Content-Type or <meta>) as UTF-8; unknown labels or
// undecodable bytes give U+FFFD, never invalid UTF-8.
std::string ToUtf8(std::string_view bytes, std::string_view charset);

}  // namespace celeriac::extractor::parse
