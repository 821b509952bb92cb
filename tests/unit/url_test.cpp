// core/url: parsing on curl's URL parser, canonical forms for fingerprints, percent-encoding
// normalisation and query arguments (no network).

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
                          "http://[:10]/"}) {
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

TEST(UrlQuery, SplitsAndEncodes) {
  using V = std::vector<std::string_view>;
  EXPECT_EQ(SplitQuery("a=1&&b&"), (V{"a=1", "b"}));
  EXPECT_EQ(SplitQuery(""), V{});
  EXPECT_EQ(QueryParam("a=1&b", "b"), "");
  EXPECT_EQ(EncodeComponent("a b&c=d~"), "a%20b%26c%3Dd~");
}

}  // namespace
}  // namespace celeriac::url
