// url: URL handling on hrefs, Location headers and configured URLs: core/http/url.hpp (what the
// downloader accepts, redirects), extractor/parse/url.hpp (reference parsing, urljoin and
// normalisation of links, query parameters, registrable domains), the request fingerprint's
// CanonicalUrl (state/crawl_store), and the AMQP URL parser (core/broker/amqp_url.hpp).
//
// Input: lines; the first is the base URL, each other line (at most 16) a reference, a Location
// or a URL on its own.
//
// Invariants: nothing throws; a link that ResolveHttpUrl produces is accepted by the downloader,
// and resolving it again (against itself, or as an absolute reference) gives it unchanged (so a
// link found twice dedups); the downloader's normalised URL is a fixed point; a parsed reference
// prints back to what reparses the same; SetQueryParam sets what QueryParam reads; percent
// encoding round-trips.

#include <string>

#include "core/base/text.hpp"
#include "core/broker/amqp_url.hpp"
#include "core/url/url.hpp"
#include "extractor/parse/url.hpp"
#include "state/crawl_store.hpp"
#include "tests/fuzz/fuzz_support.hpp"

namespace {

namespace http = celeriac::url;  // the downloader's URL rules
namespace parse = celeriac::extractor::parse;

void CheckDownloaderUrl(std::string_view text) {
  auto parsed = http::ParseHttpUrl(text);
  if (!parsed.ok()) return;
  FUZZ_CHECK(parsed->scheme == "http" || parsed->scheme == "https", "scheme " + parsed->scheme);
  const int port = parsed->EffectivePort();
  FUZZ_CHECK(port > 0 && port <= 65535, "port " + std::to_string(port));
  const std::string printed = parsed->ToString();
  auto again = http::ParseHttpUrl(printed);
  FUZZ_CHECK(again.ok(), "normalised URL refused: " + printed);
  FUZZ_CHECK(again->ToString() == printed, "normalising twice changed " + printed);
}

void CheckLink(std::string_view base, std::string_view reference, bool strip_fragment) {
  const auto link = parse::ResolveHttpUrl(base, reference, strip_fragment);
  if (!link) return;
  auto fetched = http::ParseHttpUrl(*link);
  FUZZ_CHECK(fetched.ok(), "the downloader refuses link " + *link + ": " +
                               (fetched.ok() ? std::string() : fetched.error().message()));
  const auto again = parse::ResolveHttpUrl(*link, *link, strip_fragment);
  FUZZ_CHECK(again && *again == *link, "resolving link " + *link + " again gave " +
                                           (again ? *again : std::string("nothing")));
  const auto from_base = parse::ResolveHttpUrl(base, *link, strip_fragment);
  FUZZ_CHECK(from_base && *from_base == *link, "link " + *link + " as an absolute reference gave " +
                                                   (from_base ? *from_base : std::string("nothing")));
  (void)celeriac::state::CanonicalUrl(*link);
}

void CheckReference(std::string_view text) {
  const auto parts = parse::ParseUrlReference(text);
  if (!parts) return;
  (void)parts->EffectivePort();
  if (!parts->scheme.empty() && parts->has_authority) (void)parts->Origin();
  const std::string printed = parts->ToString();
  const auto reparsed = parse::ParseUrlReference(printed);
  FUZZ_CHECK(reparsed && reparsed->ToString() == printed, "reference does not reprint: " + printed);
  (void)parse::RegistrableDomain(parts->host);
  if (parts->has_query) {
    const auto eq = parts->query.find('=');
    (void)parse::QueryParam(parts->query, celeriac::PercentDecode(parts->query.substr(0, eq), true));
  }
  if (const auto set = parse::SetQueryParam(text, "page", "3 &x")) {
    const auto after = parse::ParseUrlReference(*set);
    FUZZ_CHECK(after && after->has_query, "SetQueryParam lost the query: " + *set);
    FUZZ_CHECK(parse::QueryParam(after->query, "page") == "3 &x",
               "SetQueryParam then QueryParam: " + *set);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto lines = celeriac::fuzz::Split(celeriac::fuzz::AsText(data, size), '\n', 17);
  const std::string_view base = lines[0];
  CheckDownloaderUrl(base);
  CheckReference(base);
  (void)celeriac::broker::ParseAmqpUrl(std::string(base));
  for (size_t i = 1; i < lines.size(); ++i) {
    const std::string_view line = lines[i];
    CheckDownloaderUrl(line);
    CheckReference(line);
    CheckLink(base, line, true);
    CheckLink(base, line, false);
    if (auto redirect = http::ResolveRedirect(base, line); redirect.ok())
      FUZZ_CHECK(http::ParseHttpUrl(*redirect).ok(), "redirect target refused: " + *redirect);
    (void)celeriac::broker::ParseAmqpUrl(std::string(line));
    FUZZ_CHECK(celeriac::PercentDecode(parse::PercentEncodeComponent(line), false) == line,
               "percent encoding does not round-trip");
  }
  return 0;
}
