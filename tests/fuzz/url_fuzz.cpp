// url: URL handling on hrefs, Location headers and configured URLs, all in core/url: Parse and
// ParseHttpUrl (what the downloader accepts), ResolveRedirect, ResolveLink (links), Canonicalize
// (request fingerprints), query arguments and percent-encoding; the registrable domain
// (extractor/parse) of what parses; and the AMQP URL parser built on it (core/broker).
//
// Input: lines; the first is the base URL, each other line (at most 16) a reference, a Location
// or a URL on its own.
//
// Invariants: nothing throws; a parsed URL prints back to what parses the same (the
// downloader's normal form is a fixed point); a link that ResolveLink produces is accepted by the
// downloader, and resolving it again (against itself, or as an absolute reference) gives it
// unchanged (so a link found twice dedups); Canonicalize and NormalizePercentEncoding are
// idempotent; SetQueryParam sets what QueryParam reads; percent encoding round-trips.

#include <string>

#include "core/base/text.hpp"
#include "core/broker/amqp_url.hpp"
#include "core/url/query.hpp"
#include "core/url/url.hpp"
#include "extractor/parse/registrable_domain.hpp"
#include "tests/fuzz/fuzz_support.hpp"

namespace {

namespace url = celeriac::url;

void CheckDownloaderUrl(std::string_view text) {
  auto parsed = url::ParseHttpUrl(text);
  if (!parsed.ok()) return;
  FUZZ_CHECK(parsed->scheme == "http" || parsed->scheme == "https", "scheme " + parsed->scheme);
  const int port = parsed->EffectivePort();
  FUZZ_CHECK(port > 0 && port <= 65535, "port " + std::to_string(port));
  const std::string printed = parsed->ToString();
  auto again = url::ParseHttpUrl(printed);
  FUZZ_CHECK(again.ok(), "normalised URL refused: " + printed);
  FUZZ_CHECK(again->ToString() == printed, "normalising twice changed " + printed);
}

void CheckUrl(std::string_view text) {
  const std::string canonical = url::Canonicalize(text);
  FUZZ_CHECK(url::Canonicalize(canonical) == canonical, "canonical form not stable: " + canonical);
  const std::string normalized = url::NormalizePercentEncoding(text);
  FUZZ_CHECK(url::NormalizePercentEncoding(normalized) == normalized,
             "percent-encoding normalisation not stable: " + normalized);
  for (const bool keep_dot_segments : {false, true}) {
    auto parts = url::Parse(text, {.keep_dot_segments = keep_dot_segments});
    if (!parts.ok()) continue;
    FUZZ_CHECK(parts->port >= 0 && parts->port <= 65535, "port " + std::to_string(parts->port));
    FUZZ_CHECK(!parts->host.empty() && !parts->path.empty(), "no host or path");
    (void)parts->Origin();
    const std::string printed = parts->ToString();
    auto reparsed = url::Parse(printed, {.keep_dot_segments = keep_dot_segments});
    FUZZ_CHECK(reparsed.ok() && reparsed->ToString() == printed,
               "URL does not reprint: " + printed);
    (void)celeriac::extractor::parse::RegistrableDomain(parts->host);
    if (!parts->query.empty()) {
      const auto eq = parts->query.find('=');
      (void)url::QueryParam(parts->query,
                            celeriac::PercentDecode(parts->query.substr(0, eq), true));
    }
  }
  if (const auto set = url::SetQueryParam(text, "page", "3 &x")) {
    const auto after = url::Parse(*set);
    FUZZ_CHECK(after.ok(), "SetQueryParam made a URL that does not parse: " + *set);
    FUZZ_CHECK(url::QueryParam(after->query, "page") == "3 &x",
               "SetQueryParam then QueryParam: " + *set);
  }
}

void CheckLink(std::string_view base, std::string_view reference, bool strip_fragment) {
  const auto link = url::ResolveLink(base, reference, strip_fragment);
  if (!link) return;
  auto fetched = url::ParseHttpUrl(*link);
  FUZZ_CHECK(fetched.ok(), "the downloader refuses link " + *link + ": " +
                               (fetched.ok() ? std::string() : fetched.error().message()));
  FUZZ_CHECK(fetched->ToString() == *link, "the downloader fetches " + fetched->ToString() +
                                               " for link " + *link);
  const auto again = url::ResolveLink(*link, *link, strip_fragment);
  FUZZ_CHECK(again && *again == *link, "resolving link " + *link + " again gave " +
                                           (again ? *again : std::string("nothing")));
  const auto from_base = url::ResolveLink(base, *link, strip_fragment);
  FUZZ_CHECK(from_base && *from_base == *link, "link " + *link + " as an absolute reference gave " +
                                                   (from_base ? *from_base : std::string("nothing")));
  const std::string canonical = url::Canonicalize(*link);
  FUZZ_CHECK(url::ParseHttpUrl(canonical).ok(), "canonical form of link " + *link + " refused");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto lines = celeriac::fuzz::Split(celeriac::fuzz::AsText(data, size), '\n', 17);
  const std::string_view base = lines[0];
  CheckDownloaderUrl(base);
  CheckUrl(base);
  (void)celeriac::broker::ParseAmqpUrl(std::string(base));
  for (size_t i = 1; i < lines.size(); ++i) {
    const std::string_view line = lines[i];
    CheckDownloaderUrl(line);
    CheckUrl(line);
    CheckLink(base, line, true);
    CheckLink(base, line, false);
    if (auto redirect = url::ResolveRedirect(base, line); redirect.ok())
      FUZZ_CHECK(url::ParseHttpUrl(*redirect).ok(), "redirect target refused: " + *redirect);
    (void)celeriac::broker::ParseAmqpUrl(std::string(line));
    FUZZ_CHECK(celeriac::PercentDecode(url::EncodeComponent(line), false) == line,
               "percent encoding does not round-trip");
  }
  return 0;
}
