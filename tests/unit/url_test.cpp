// core/url: parsing on curl's URL parser, links resolved against a page (RFC 3986 section 5.4
// examples), canonical forms for fingerprints, percent-encoding normalisation and query
// arguments (no network).

#include <gtest/gtest.h>

#include "core/url/query.hpp"
#include "core/url/url.hpp"

namespace celeriac::url {
namespace {

TEST(Url, ParsesThePartsAsCurlReadsThem) {
  auto u = Parse("HTTPS://User:Pw@Shop.Example.COM:8443/a/./b/../c?page=2&q=a+b%21#top");
  ASSERT_TRUE(u.ok()) << u.error().ToString();
  EXPECT_EQ(u->scheme, "https");
  EXPECT_EQ(u->userinfo, "User:Pw");
  EXPECT_EQ(u->host, "shop.example.com");
  EXPECT_EQ(u->port, 8443);
  EXPECT_EQ(u->path, "/a/c");
  EXPECT_EQ(u->query, "page=2&q=a+b%21");
  EXPECT_EQ(u->fragment, "top");
  EXPECT_EQ(u->Origin(), "https://shop.example.com:8443");
  EXPECT_EQ(u->ToString(), "https://User:Pw@shop.example.com:8443/a/c?page=2&q=a+b%21#top");

  auto bare = Parse("http://h");
  ASSERT_TRUE(bare.ok());
  EXPECT_EQ(bare->path, "/");
  EXPECT_EQ(bare->port, 0);
  EXPECT_EQ(bare->EffectivePort(), 80);
  EXPECT_EQ(bare->ToString(), "http://h/");

  auto explicit_default = Parse("http://h:80/x");
  ASSERT_TRUE(explicit_default.ok());
  EXPECT_EQ(explicit_default->Origin(), "http://h");
  EXPECT_EQ(explicit_default->ToString(), "http://h:80/x");  // Parse keeps what was written

  auto v6 = Parse("http://[2001:DB8::7]:8080/v");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->host, "[2001:db8::7]");
  EXPECT_EQ(v6->Origin(), "http://[2001:db8::7]:8080");
}

TEST(Url, AnySchemeAndDotSegmentsKeptOnRequest) {
  auto amqp = Parse("amqp://us%40er:p%2Fw@rabbit:5673//", {.keep_dot_segments = true});
  ASSERT_TRUE(amqp.ok());
  EXPECT_EQ(amqp->userinfo, "us%40er:p%2Fw");
  EXPECT_EQ(amqp->path, "//");
  EXPECT_EQ(amqp->EffectivePort(), 5673);
  EXPECT_EQ(Parse("amqp://h/a/../b", {.keep_dot_segments = true})->path, "/a/../b");
  EXPECT_EQ(Parse("amqp://h/a/../b")->path, "/b");
  EXPECT_EQ(Parse("amqps://h")->EffectivePort(), 5671);
  EXPECT_EQ(Parse("foo://h")->EffectivePort(), 0);
}

TEST(Url, RefusesWhatIsNoAbsoluteUrlWithAHost) {
  for (const char* bad : {"", "example.com/x", "/relative", "mailto:x@y", "http://", "http://h:0/",
                          "http://h:65536/", "http:// bad/", "http://[fe80::1%25eth0]/",
                          "http://[:10]/", "redis://lo%25calhost/", "http://a%7Fb/",
                          "http://a%00b/"}) {
    auto r = Parse(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_EQ(r.error().code(), ErrorCode::kInvalidArgument) << bad;
      EXPECT_FALSE(r.error().retryable()) << bad;
    }
  }
  EXPECT_FALSE(Parse(std::string_view("http://a/\0x", 11)).ok());
  EXPECT_FALSE(Parse("http://h/" + std::string(64 * 1024, 'a')).ok());
  auto long_error = Parse("bad " + std::string(1000, 'x'));
  ASSERT_FALSE(long_error.ok());
  EXPECT_LT(long_error.error().message().size(), 300u);
}

TEST(Url, ToStringParsesBackToTheSameParts) {
  for (const char* text : {"http://u:@h:1/p?q#f", "https://:p@h/", "http://h/a%20b?x=%26#y#z",
                           "http://[::1]/", "amqp://h//vhost?heartbeat=5"}) {
    auto u = Parse(text);
    ASSERT_TRUE(u.ok()) << text;
    auto again = Parse(u->ToString());
    ASSERT_TRUE(again.ok()) << u->ToString();
    EXPECT_EQ(again->ToString(), u->ToString()) << text;
  }
}

TEST(Url, CanonicalFormDropsWhatDoesNotNameAnotherResource) {
  // What the old CanonicalUrl already did (fingerprints of these stay as they were).
  EXPECT_EQ(Canonicalize("HTTP://Example.COM:80/a?b=2&a=1#frag"), "http://example.com/a?a=1&b=2");
  EXPECT_EQ(Canonicalize("https://h:443"), "https://h/");
  EXPECT_EQ(Canonicalize("https://h:8443/x"), "https://h:8443/x");
  EXPECT_EQ(Canonicalize("http://h/p?"), "http://h/p");
  EXPECT_EQ(Canonicalize("http://h/p?&&x=1&"), "http://h/p?x=1");
  EXPECT_EQ(Canonicalize("https://books.example.com/catalogue/page-2.html"),
            "https://books.example.com/catalogue/page-2.html");
  EXPECT_EQ(Canonicalize("http://u:P@h/"), "http://u:P@h/");
  EXPECT_EQ(Canonicalize("not a url"), "not a url");
  // New: dot segments, percent-encoding, repeated arguments.
  EXPECT_EQ(Canonicalize("http://h/a/./b/../c"), "http://h/a/c");
  EXPECT_EQ(Canonicalize("http://h/a/%2e%2E/c"), "http://h/c");
  EXPECT_EQ(Canonicalize("http://h/%7euser/%2f%41%c3%a9"), "http://h/~user/%2FA%C3%A9");
  EXPECT_EQ(Canonicalize("http://h/a b/\xC3\xA9?q=x y"), "http://h/a%20b/%C3%A9?q=x%20y");
  EXPECT_EQ(Canonicalize("http://h/?b=1&a=2&a=1"), "http://h/?a=1&a=2&b=1");
  EXPECT_EQ(Canonicalize("http://h/?q=%7e&q=~"), "http://h/?q=~&q=~");
  EXPECT_EQ(Canonicalize("http://B\xC3\x9C" "CHER.de/"), "http://xn--bcher-kva.de/");
  // Not w3lib's: "a" and "a=" stay two arguments, '+' and "%20" two spellings.
  EXPECT_EQ(Canonicalize("http://h/?a=&a"), "http://h/?a&a=");
  EXPECT_EQ(Canonicalize("http://h/?q=a+b&r=a%20b"), "http://h/?q=a+b&r=a%20b");
  for (const char* text : {"HTTP://H:80/a/%2e%2e/b?z=1&y=%7e#f", "http://h/a b?x", "x"}) {
    EXPECT_EQ(Canonicalize(Canonicalize(text)), Canonicalize(text)) << text;
  }
}

TEST(Url, PercentEncodingNormalisedToOneSpellingPerOctet) {
  EXPECT_EQ(NormalizePercentEncoding("/%7euser/%2fa%41b"), "/~user/%2FaAb");
  EXPECT_EQ(NormalizePercentEncoding("/100%/%zz/%4"), "/100%25/%25zz/%254");
  EXPECT_EQ(NormalizePercentEncoding("/a b\x01\x7F\xC3\xA9"), "/a%20b%01%7F%C3%A9");
  EXPECT_EQ(NormalizePercentEncoding("/*.php$?a=b&c"), "/*.php$?a=b&c");
}

std::string Resolve(const std::string& ref, bool strip = false) {
  return ResolveLink("http://a/b/c/d;p?q", ref, strip).value_or("<none>");
}

TEST(UrlLink, Rfc3986NormalExamples) {
  EXPECT_EQ(Resolve("g"), "http://a/b/c/g");
  EXPECT_EQ(Resolve("./g"), "http://a/b/c/g");
  EXPECT_EQ(Resolve("g/"), "http://a/b/c/g/");
  EXPECT_EQ(Resolve("/g"), "http://a/g");
  EXPECT_EQ(Resolve("//g"), "http://g/");
  EXPECT_EQ(Resolve("?y"), "http://a/b/c/d;p?y");
  EXPECT_EQ(Resolve("g?y"), "http://a/b/c/g?y");
  EXPECT_EQ(Resolve("#s"), "http://a/b/c/d;p?q#s");
  EXPECT_EQ(Resolve("g?y#s"), "http://a/b/c/g?y#s");
  EXPECT_EQ(Resolve(";x"), "http://a/b/c/;x");
  EXPECT_EQ(Resolve(""), "http://a/b/c/d;p?q");
  EXPECT_EQ(Resolve("."), "http://a/b/c/");
  EXPECT_EQ(Resolve("./"), "http://a/b/c/");
  EXPECT_EQ(Resolve(".."), "http://a/b/");
  EXPECT_EQ(Resolve("../g"), "http://a/b/g");
  EXPECT_EQ(Resolve("../.."), "http://a/");
  EXPECT_EQ(Resolve("../../g"), "http://a/g");
}

TEST(UrlLink, Rfc3986AbnormalExamples) {
  EXPECT_EQ(Resolve("../../../g"), "http://a/g");
  EXPECT_EQ(Resolve("/./g"), "http://a/g");
  EXPECT_EQ(Resolve("/../g"), "http://a/g");
  EXPECT_EQ(Resolve("g."), "http://a/b/c/g.");
  EXPECT_EQ(Resolve("..g"), "http://a/b/c/..g");
  EXPECT_EQ(Resolve("./../g"), "http://a/b/g");
  EXPECT_EQ(Resolve("g/./h"), "http://a/b/c/g/h");
  EXPECT_EQ(Resolve("g/../h"), "http://a/b/c/h");
  EXPECT_EQ(Resolve("g;x=1/../y"), "http://a/b/c/y");
  EXPECT_EQ(Resolve("g?y/./x"), "http://a/b/c/g?y/./x");
  EXPECT_EQ(Resolve("g#s/../x"), "http://a/b/c/g#s/../x");
}

TEST(UrlLink, CleansAndNormalisesLikeABrowser) {
  EXPECT_EQ(Resolve("  /p a\tth/?q=a b#frag  ", true), "http://a/p%20ath/?q=a%20b");
  EXPECT_EQ(Resolve("HTTP://Example.COM:80/x"), "http://example.com/x");
  EXPECT_EQ(Resolve("https://h:443"), "https://h/");
  EXPECT_EQ(Resolve("https://h:8443/x"), "https://h:8443/x");
  EXPECT_EQ(Resolve("\\\\other\\path"), "http://other/path");
  EXPECT_EQ(Resolve("/caf\xC3\xA9"), "http://a/caf%C3%A9");
  EXPECT_EQ(Resolve("/100%"), "http://a/100%25");
  EXPECT_EQ(Resolve("/a%20b"), "http://a/a%20b");
  EXPECT_EQ(Resolve("javascript:alert(1)"), "<none>");
  EXPECT_EQ(Resolve("mailto:x@y"), "<none>");
  EXPECT_EQ(Resolve("ftp://h/x"), "<none>");
  EXPECT_EQ(Resolve("http://bad host/"), "<none>");
  EXPECT_EQ(Resolve("http://h:99999/"), "<none>");
  EXPECT_EQ(Resolve("http:///x"), "<none>");
}

TEST(UrlLink, ALinkResolvesTheSameHoweverTheBaseIsWritten) {
  // A query-only or empty reference keeps the base's path: dot segments go from it too, so the
  // link is the one "/a/b" gives and dedups with it (found by tests/fuzz url).
  for (const char* base : {"http://h/a/./b", "http://h/a/c/../b", "http://h/a/b"}) {
    EXPECT_EQ(ResolveLink(base, "?page=3", true), "http://h/a/b?page=3") << base;
    EXPECT_EQ(ResolveLink(base, "", true), "http://h/a/b") << base;
  }
  EXPECT_EQ(ResolveLink("http://h/x/index.html./.", "?p=1", true), "http://h/x/index.html./?p=1");
}

TEST(UrlLink, UserinfoIsEscapedLikeThePath) {
  // Controls and a NUL in an href's userinfo reached the downloader raw (tests/fuzz url).
  EXPECT_EQ(ResolveLink("http://a/", std::string("https://\x19u\0 :p w@h/x", 20), true),
            "https://%19u%00%20:p%20w@h/x");
  EXPECT_EQ(ResolveLink("http://a/", "https://me@home:pw@h/", true), "https://me%40home:pw@h/");
  EXPECT_EQ(ResolveLink("http://a/", "https://user:pw@h/", true), "https://user:pw@h/");
  EXPECT_EQ(ResolveLink("http://user:pw@h/a", "b", true), "http://user:pw@h/b");
}

TEST(UrlLink, AnAuthorityIsHostThenPort) {
  // Not "h:80.example" with port "00": that would print back as another URL (tests/fuzz url).
  EXPECT_FALSE(Parse("http://a:80.example:00/x").ok());
  EXPECT_EQ(ResolveLink("http://a/", "//u:p@h:1:2/", true), std::nullopt);
  EXPECT_EQ(ResolveLink("http://a/", "//u:p@h:8080/", true), "http://u:p@h:8080/");
  EXPECT_EQ(Parse("http://[::1]:8080/")->host, "[::1]");
  EXPECT_EQ(Parse("http://h:/x")->ToString(), "http://h/x");
  EXPECT_FALSE(Parse("amqp://[::1]:http:/x").ok());
  EXPECT_FALSE(Parse("http://[::1/").ok());
  EXPECT_FALSE(Parse("http://[::1]x/").ok());
  EXPECT_EQ(Parse("http://[::1]:/")->ToString(), "http://[::1]/");
  // Only real IPv6 literals make links (tests/fuzz url: the downloader refused "[:10]").
  EXPECT_EQ(ResolveLink("http://a/", "http://[:10]:8080/v", true), std::nullopt);
  EXPECT_EQ(ResolveLink("http://a/", "http://[1:2:3:4:5:6:7:8:9]/", true), std::nullopt);
  EXPECT_EQ(ResolveLink("http://a/", std::string("http://[::1\0]/", 14), true), std::nullopt);
  EXPECT_EQ(ResolveLink("http://a/", "http://[2001:db8::7]:8080/v", true),
            "http://[2001:db8::7]:8080/v");
  EXPECT_EQ(ResolveLink("http://a/", "http://[::ffff:192.0.2.1]/", true),
            "http://[::ffff:192.0.2.1]/");
}

TEST(UrlLink, WhereCurlDecides) {
  // curl 7.88 keeps no empty query or fragment.
  EXPECT_EQ(ResolveLink("http://a/", "/p?", false), "http://a/p");
  EXPECT_EQ(ResolveLink("http://a/", "/p#", false), "http://a/p");
  // Hosts as curl connects to them: escapes decoded, IPv4 in any notation a dotted quad.
  EXPECT_EQ(ResolveLink("http://a/", "http://%41.example/", true), "http://a.example/");
  EXPECT_EQ(ResolveLink("http://a/", "http://2130706433/x", true), "http://127.0.0.1/x");
  EXPECT_EQ(ResolveLink("http://a/", "http://%30x7f.1/x", true), "http://127.0.0.1/x");
  EXPECT_EQ(ResolveLink("http://a/", "http://%33333333/", true), "http://0.50.220.213/");
  EXPECT_EQ(ResolveLink("http://a/", "http://%63afe.example/", true), "http://cafe.example/");
  EXPECT_EQ(ResolveLink("http://a/", "http://[2001:DB8:0::7]/", true), "http://[2001:db8::7]/");
  // Internationalised names in punycode (UTS #46, as browsers and w3lib's safe_url_string).
  EXPECT_EQ(ResolveLink("http://a/", "https://\xE6\x97\xA5\xE6\x9C\xAC.jp/", true),
            "https://xn--wgv71a.jp/");
  EXPECT_EQ(ResolveLink("http://a/", "https://B\xC3\x9C" "CHER.de/x", true),
            "https://xn--bcher-kva.de/x");
  EXPECT_EQ(ResolveLink("http://a/", "https://b%C3%BCcher.de/", true), "https://xn--bcher-kva.de/");
  EXPECT_EQ(ResolveLink("http://a/", "https://\xFF.de/", true), std::nullopt);  // not UTF-8
  EXPECT_FALSE(Parse("https://a\xE2\x81\x88.jp/").ok());  // U+2048 maps to "?!"
  EXPECT_FALSE(Parse("https://\xC2\xAD/").ok());  // U+00AD maps to nothing
  // Not followed: a scheme without "//" and a host, a zone id.
  EXPECT_EQ(ResolveLink("http://a/", "http:/h/x", true), std::nullopt);
  EXPECT_EQ(ResolveLink("http://a/", std::string(41, 'h') + "://h/", true), std::nullopt);
  EXPECT_EQ(ResolveLink("http://a/", "http://[fe80::1%25eth0]/", true), std::nullopt);
  // The base is escaped as a link is, so a page URL with a raw space still resolves.
  EXPECT_EQ(ResolveLink("http://h/a b/c", "d", true), "http://h/a%20b/d");
}

TEST(UrlQuery, ArgumentsReadAndSet) {
  auto u = Parse("https://User@Shop.Example.com:8443/a/b?page=2&q=a+b%21#top");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->scheme, "https");
  EXPECT_EQ(u->host, "shop.example.com");
  EXPECT_EQ(u->EffectivePort(), 8443);
  EXPECT_EQ(u->Origin(), "https://shop.example.com:8443");
  EXPECT_EQ(u->path, "/a/b");
  EXPECT_EQ(u->fragment, "top");
  EXPECT_EQ(QueryParam(u->query, "q").value_or("-"), "a b!");
  EXPECT_EQ(QueryParam(u->query, "page").value_or("-"), "2");
  EXPECT_FALSE(QueryParam(u->query, "nope").has_value());
  EXPECT_EQ(SetQueryParam("http://h/p?page=1&x=2&page=9", "page", "2").value_or(""),
            "http://h/p?page=2&x=2");
  EXPECT_EQ(SetQueryParam("http://h/p", "page", "2").value_or(""), "http://h/p?page=2");
  EXPECT_EQ(SetQueryParam("http://h/p?a=1#f", "p g", "x&y").value_or(""),
            "http://h/p?a=1&p%20g=x%26y#f");
}

TEST(UrlQuery, SplitsAndEncodes) {
  using V = std::vector<std::string_view>;
  EXPECT_EQ(SplitQuery("a=1&&b&"), (V{"a=1", "b"}));
  EXPECT_EQ(SplitQuery(""), V{});
  EXPECT_EQ(QueryParam("a=1&b", "b"), "");
  EXPECT_EQ(EncodeComponent("a b&c=d~"), "a%20b%26c%3Dd~");
}

}  // namespace
}  // namespace celeriac::url
