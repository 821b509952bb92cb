#pragma once
// UTF-8 text from outside bytes. Message headers, bodies, pages and error messages built from
// them reach places that refuse invalid UTF-8 (nlohmann::json::dump throws on it; Postgres
// `text`, `json` and `jsonb` reject it, and `text`/`jsonb` reject U+0000 too). These helpers
// decide whether bytes can go there as they are and turn them into a form that can.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace celeriac {

// Length of the valid UTF-8 sequence at s[i] (1 for ASCII), or 0 if the bytes there are not one
// (overlong forms, surrogates and code points above U+10FFFF are invalid).
size_t Utf8SequenceAt(std::string_view s, size_t i);

bool IsValidUtf8(std::string_view s);

// Invalid sequences replaced by U+FFFD.
std::string SanitizeUtf8(std::string_view s);

// U+0000, surrogates and code points above U+10FFFF are written as U+FFFD (as HTML and CSS
// decode them), so the result stays storable text.
void AppendUtf8(std::string* out, uint32_t code_point);

// Whether `s` is valid UTF-8 without U+0000: storable in any Postgres text or jsonb value.
bool IsStorableText(std::string_view s);

// `s` as storable text: every byte of an invalid sequence, and U+0000, written as the four
// characters \xNN, so the text stays readable and shows what was there. Storable text comes back
// unchanged. (The original bytes, where they matter, are kept elsewhere: a dead letter keeps the
// message's bytes whole.)
std::string EscapeToStorableText(std::string_view s);

// `s` without the whitespace at either end: ASCII whitespace and U+00A0 (no-break space,
// common in page text from &nbsp;). The one trim for every caller.
std::string_view Trim(std::string_view s);

// ASCII letters lower-cased; other bytes (UTF-8 included) unchanged.
std::string AsciiLower(std::string_view s);

// Lower-case hex of every byte.
std::string HexEncode(std::string_view bytes);

// The value of one hex digit (either case), or -1.
int HexDigitValue(char c);

// Percent-encoding (RFC 3986 2.1), the one copy for every URL, DSN and robots.txt path:
// `%XX` with upper-case hex appended for one byte; decoding where a '%' not followed by two hex
// digits stays as it is (and '+' becomes a space when `plus_is_space`, as in form data); and a
// strict decode that refuses such a '%' (nullopt), for text where it is an error.
void AppendPercentEncoded(std::string& out, unsigned char byte);
std::string PercentDecode(std::string_view text, bool plus_is_space = false);
std::optional<std::string> PercentDecodeStrict(std::string_view text);

}  // namespace celeriac
