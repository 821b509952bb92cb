// core/http without a network: which addresses the crawl policy refuses, URL and redirect
// helpers, header lookups.

#include <gtest/gtest.h>

#include "core/http/address.hpp"
#include "core/http/client.hpp"
#include "core/http/redirect.hpp"
#include "core/url/url.hpp"

namespace celeriac::http {
namespace {

using url::ParseHttpUrl;
using url::ResolveRedirect;

AddressClass Of(const char* text) {
  auto c = ClassifyAddressText(text);
  EXPECT_TRUE(c.has_value()) << text;
  return c.value_or(AddressClass::kPublic);
}

TEST(HttpAddress, Ipv4Ranges) {
  EXPECT_EQ(Of("8.8.8.8"), AddressClass::kPublic);
  EXPECT_EQ(Of("93.184.216.34"), AddressClass::kPublic);
  EXPECT_EQ(Of("0.0.0.0"), AddressClass::kUnspecified);
  EXPECT_EQ(Of("0.1.2.3"), AddressClass::kUnspecified);
  EXPECT_EQ(Of("127.0.0.1"), AddressClass::kLoopback);
  EXPECT_EQ(Of("127.255.0.2"), AddressClass::kLoopback);
  EXPECT_EQ(Of("10.1.2.3"), AddressClass::kPrivate);
  EXPECT_EQ(Of("172.16.0.1"), AddressClass::kPrivate);
  EXPECT_EQ(Of("172.31.255.255"), AddressClass::kPrivate);
  EXPECT_EQ(Of("172.32.0.1"), AddressClass::kPublic);
  EXPECT_EQ(Of("172.15.255.255"), AddressClass::kPublic);
  EXPECT_EQ(Of("192.168.1.1"), AddressClass::kPrivate);
  EXPECT_EQ(Of("169.254.169.254"), AddressClass::kLinkLocal);
  EXPECT_EQ(Of("100.64.0.1"), AddressClass::kSharedCgnat);
  EXPECT_EQ(Of("100.127.255.255"), AddressClass::kSharedCgnat);
  EXPECT_EQ(Of("100.128.0.1"), AddressClass::kPublic);
  EXPECT_EQ(Of("224.0.0.1"), AddressClass::kMulticast);
  EXPECT_EQ(Of("239.255.255.250"), AddressClass::kMulticast);
  EXPECT_EQ(Of("255.255.255.255"), AddressClass::kBroadcast);
  EXPECT_EQ(Of("240.0.0.1"), AddressClass::kReserved);
  EXPECT_EQ(Of("192.0.2.5"), AddressClass::kDocumentation);
  EXPECT_EQ(Of("198.51.100.5"), AddressClass::kDocumentation);
  EXPECT_EQ(Of("203.0.113.5"), AddressClass::kDocumentation);
  EXPECT_EQ(Of("198.18.0.1"), AddressClass::kReserved);
  EXPECT_EQ(Of("192.0.0.8"), AddressClass::kReserved);
}

TEST(HttpAddress, Ipv6Ranges) {
  EXPECT_EQ(Of("2606:4700::1111"), AddressClass::kPublic);
  EXPECT_EQ(Of("::"), AddressClass::kUnspecified);
  EXPECT_EQ(Of("::1"), AddressClass::kLoopback);
  EXPECT_EQ(Of("[::1]"), AddressClass::kLoopback);
  EXPECT_EQ(Of("fc00::1"), AddressClass::kPrivate);
  EXPECT_EQ(Of("fd12:3456::1"), AddressClass::kPrivate);
  EXPECT_EQ(Of("fe80::1"), AddressClass::kLinkLocal);
  EXPECT_EQ(Of("fe80::1%eth0"), AddressClass::kLinkLocal);
  EXPECT_EQ(Of("fec0::1"), AddressClass::kPrivate);
  EXPECT_EQ(Of("ff02::1"), AddressClass::kMulticast);
  EXPECT_EQ(Of("2001:db8::1"), AddressClass::kDocumentation);
  EXPECT_EQ(Of("100::1"), AddressClass::kReserved);
  EXPECT_EQ(Of("2001::1"), AddressClass::kReserved);  // Teredo
  EXPECT_EQ(Of("64:ff9b:1::1"), AddressClass::kPrivate);
  EXPECT_EQ(Of("4000::1"), AddressClass::kReserved);  // outside 2000::/3
}

TEST(HttpAddress, EmbeddedIpv4IsJudgedByTheIpv4Inside) {
  EXPECT_EQ(Of("::ffff:127.0.0.1"), AddressClass::kLoopback);
  EXPECT_EQ(Of("::ffff:7f00:1"), AddressClass::kLoopback);
  EXPECT_EQ(Of("::ffff:10.0.0.1"), AddressClass::kPrivate);
  EXPECT_EQ(Of("::ffff:0.0.0.0"), AddressClass::kUnspecified);
  EXPECT_EQ(Of("::ffff:8.8.8.8"), AddressClass::kPublic);
  EXPECT_EQ(Of("::127.0.0.1"), AddressClass::kLoopback);       // IPv4-compatible
  EXPECT_EQ(Of("64:ff9b::192.168.0.1"), AddressClass::kPrivate);  // NAT64
  EXPECT_EQ(Of("64:ff9b::8.8.8.8"), AddressClass::kPublic);
  EXPECT_EQ(Of("2002:7f00:1::"), AddressClass::kLoopback);     // 6to4 of 127.0.0.1
  EXPECT_EQ(Of("2002:0808:0808::"), AddressClass::kPublic);
}

TEST(HttpAddress, HostNamesAreNotLiterals) {
  EXPECT_FALSE(ClassifyAddressText("localhost").has_value());
  EXPECT_FALSE(ClassifyAddressText("example.com").has_value());
  EXPECT_FALSE(ClassifyAddressText("").has_value());
  EXPECT_FALSE(ClassifyAddressText("[]").has_value());
}

TEST(HttpUrl, ParsesOnlyAbsoluteHttpUrls) {
  auto u = ParseHttpUrl("HTTPS://Example.COM/a?b=1#frag");
  ASSERT_TRUE(u.ok()) << u.error().ToString();
  EXPECT_EQ(u->scheme, "https");
  EXPECT_EQ(u->port, 0);  // as written
  EXPECT_EQ(u->EffectivePort(), 443);
  auto v6 = ParseHttpUrl("http://[::1]:8080/");
  ASSERT_TRUE(v6.ok());
  EXPECT_EQ(v6->host, "[::1]");
  EXPECT_EQ(v6->port, 8080);
  for (const char* bad : {"", "example.com/x", "ftp://example.com/", "file:///etc/passwd",
                          "gopher://x/", "http://", "http:// bad host/", "javascript:alert(1)",
                          "http://example.com:0/", "https://example.com:00/x"}) {
    auto r = ParseHttpUrl(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_FALSE(r.error().retryable()) << bad;
    }
  }
}

TEST(HttpUrl, ANulByteIsRefusedNotCutAt) {
  // curl reads C strings: "http://a/\0x" would have been fetched as "http://a/".
  EXPECT_FALSE(ParseHttpUrl(std::string_view("http://a/\0x", 12)).ok());
  EXPECT_FALSE(ResolveRedirect("http://a/", std::string_view("/b\0c", 4)).ok());
  EXPECT_TRUE(ParseHttpUrl("http://a/x").ok());
}

TEST(HttpUrl, DecimalAndHexHostsAreNormalizedToDottedQuads) {
  // curl's parser turns these into 127.0.0.1, so the literal check sees what curl connects to.
  for (const char* url : {"http://2130706433/", "http://0x7f.0.0.1/", "http://0177.0.0.1/"}) {
    auto u = ParseHttpUrl(url);
    ASSERT_TRUE(u.ok()) << url;
    auto c = ClassifyAddressText(u->host);
    ASSERT_TRUE(c.has_value()) << url << " -> " << u->host;
    EXPECT_EQ(*c, AddressClass::kLoopback) << url;
  }
}

TEST(HttpUrl, ResolvesRedirectLocations) {
  const std::string base = "http://a.example/dir/page?x=1";
  EXPECT_EQ(ResolveRedirect(base, "other").value(), "http://a.example/dir/other");
  EXPECT_EQ(ResolveRedirect(base, "/root").value(), "http://a.example/root");
  EXPECT_EQ(ResolveRedirect(base, "../up").value(), "http://a.example/up");
  EXPECT_EQ(ResolveRedirect(base, "?y=2").value(), "http://a.example/dir/page?y=2");
  EXPECT_EQ(ResolveRedirect(base, "//b.example/x").value(), "http://b.example/x");
  EXPECT_EQ(ResolveRedirect(base, "https://c.example/").value(), "https://c.example/");
  EXPECT_FALSE(ResolveRedirect(base, "ftp://c.example/").ok());
  EXPECT_FALSE(ResolveRedirect(base, "file:///etc/passwd").ok());
  EXPECT_FALSE(ResolveRedirect(base, "").ok());
}

TEST(HttpUrl, RedirectMethodRules) {
  EXPECT_TRUE(RedirectKeepsMethod(307, "POST"));
  EXPECT_TRUE(RedirectKeepsMethod(308, "PUT"));
  EXPECT_FALSE(RedirectKeepsMethod(303, "POST"));
  EXPECT_FALSE(RedirectKeepsMethod(303, "PUT"));
  EXPECT_FALSE(RedirectKeepsMethod(302, "POST"));
  EXPECT_FALSE(RedirectKeepsMethod(301, "POST"));
  EXPECT_TRUE(RedirectKeepsMethod(301, "GET"));
  EXPECT_TRUE(RedirectKeepsMethod(302, "PUT"));
  EXPECT_TRUE(IsRedirectStatus(308));
  EXPECT_FALSE(IsRedirectStatus(304));
}

TEST(HttpHeaders, LookupIgnoresCaseAndKeepsOrder) {
  Headers h;
  h.Add("Content-Type", "text/html");
  h.Add("Set-Cookie", "a=1");
  h.Add("set-cookie", "b=2");
  EXPECT_EQ(h.Get("content-type").value(), "text/html");
  EXPECT_EQ(h.Get("CONTENT-TYPE").value(), "text/html");
  EXPECT_FALSE(h.Get("Content-Length").has_value());
  auto all = h.GetAll("Set-Cookie");
  ASSERT_EQ(all.size(), 2u);
  EXPECT_EQ(all[0], "a=1");
  EXPECT_EQ(all[1], "b=2");
  EXPECT_EQ(h.name(2), "set-cookie");
  h.Clear();
  EXPECT_EQ(h.size(), 0u);
}

TEST(HttpFailure, KindsHaveStableNames) {
  EXPECT_EQ(ToString(FailureKind::kBlockedAddress), "blocked_address");
  EXPECT_EQ(ToString(FailureKind::kFirstByteTimeout), "first_byte_timeout");
  EXPECT_EQ(ToString(HttpVersion::kHttp2), "HTTP/2");
}

}  // namespace
}  // namespace celeriac::http
