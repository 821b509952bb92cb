#pragma once
// MaskSecrets: text that is safe to print or log, with every password it carries replaced by
// "***". The one home of secret masking: `config show`, start-up errors, error messages that
// may echo a connection string, and every log line (core/log runs each line through it).
//
// Forms recognised anywhere in the text, case-insensitively for key names:
//   URL userinfo        scheme://user:secret@host/...      -> scheme://user:***@host/...
//                       (also when the password holds an unencoded '/', '?', '#' or '@',
//                       and when the scheme is missing: user:secret@host)
//   key=value pairs     host=h password=secret dbname=x    -> host=h password=*** dbname=x
//                       password = 'se cret\'s'            -> password = ***
//   query parameters    postgresql://h/db?sslpassword=s&x=1 -> ...?sslpassword=***&x=1
// A key is secret when its name is password, passwd, pwd or pass, or ends in password,
// secret or token (sslpassword, client_secret, access_token, ...), or is api_key / apikey.
// User names, hosts, ports, database names and other parameters are left as they are, so a
// masked URL still says where a process tried to connect. Malformed or truncated input (an
// unterminated quote, a URL without a host, stray '%') never throws: the rest of the text
// from an unterminated secret value on is masked.
//
// The second form also hides the passwords of one known connection string wherever they
// appear in `text` verbatim or percent-decoded, for driver errors that quote a piece of the
// string outside any recognisable form (libpq's "invalid percent-encoded token: ..."). Only
// passwords of 3 characters or more are replaced that way (a shorter one would mask every
// occurrence of a common letter pair); the forms above mask any length.
//
// Pure functions of their input; thread-safe.

#include <string>
#include <string_view>

namespace celeriac {

inline constexpr std::string_view kMaskedSecret = "***";

std::string MaskSecrets(std::string_view text);

// MaskSecrets(text), and also every literal occurrence in `text` of the passwords that
// `connection_string` carries (in any of the forms above).
std::string MaskSecrets(std::string_view text, std::string_view connection_string);

// "scheme 'xyz'" for a URL whose scheme is well formed (RFC 3986: a letter, then letters,
// digits, '+', '-', '.'), else "no URL scheme": what of an unparsable URL is safe to quote.
std::string DescribeUrlScheme(std::string_view url);

}  // namespace celeriac
