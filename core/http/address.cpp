#include "core/http/address.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <cstring>
#include <string>

namespace celeriac::http {

std::string_view ToString(AddressClass c) {
  switch (c) {
    case AddressClass::kPublic: return "public";
    case AddressClass::kUnspecified: return "unspecified";
    case AddressClass::kLoopback: return "loopback";
    case AddressClass::kPrivate: return "private";
    case AddressClass::kLinkLocal: return "link-local";
    case AddressClass::kSharedCgnat: return "shared (CGNAT)";
    case AddressClass::kMulticast: return "multicast";
    case AddressClass::kBroadcast: return "broadcast";
    case AddressClass::kDocumentation: return "documentation";
    case AddressClass::kReserved: return "reserved";
  }
  return "unknown";
}

namespace {

constexpr bool InPrefix(uint32_t addr, uint32_t net, int bits) {
  const uint32_t mask = bits == 0 ? 0 : ~uint32_t{0} << (32 - bits);
  return (addr & mask) == (net & mask);
}

constexpr uint32_t V4(uint32_t a, uint32_t b, uint32_t c, uint32_t d) {
  return a << 24 | b << 16 | c << 8 | d;
}

uint32_t LoadV4(const unsigned char* p) {
  return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | uint32_t{p[3]};
}

}  // namespace

AddressClass ClassifyIpv4(uint32_t a) {
  if (InPrefix(a, V4(0, 0, 0, 0), 8)) return AddressClass::kUnspecified;
  if (InPrefix(a, V4(127, 0, 0, 0), 8)) return AddressClass::kLoopback;
  if (InPrefix(a, V4(10, 0, 0, 0), 8) || InPrefix(a, V4(172, 16, 0, 0), 12) ||
      InPrefix(a, V4(192, 168, 0, 0), 16))
    return AddressClass::kPrivate;
  if (InPrefix(a, V4(169, 254, 0, 0), 16)) return AddressClass::kLinkLocal;
  if (InPrefix(a, V4(100, 64, 0, 0), 10)) return AddressClass::kSharedCgnat;
  if (a == V4(255, 255, 255, 255)) return AddressClass::kBroadcast;
  if (InPrefix(a, V4(224, 0, 0, 0), 4)) return AddressClass::kMulticast;
  if (InPrefix(a, V4(240, 0, 0, 0), 4)) return AddressClass::kReserved;
  if (InPrefix(a, V4(192, 0, 2, 0), 24) || InPrefix(a, V4(198, 51, 100, 0), 24) ||
      InPrefix(a, V4(203, 0, 113, 0), 24))
    return AddressClass::kDocumentation;
  // IETF protocol assignments, 6to4 relay anycast, benchmarking.
  if (InPrefix(a, V4(192, 0, 0, 0), 24) || InPrefix(a, V4(192, 88, 99, 0), 24) ||
      InPrefix(a, V4(198, 18, 0, 0), 15))
    return AddressClass::kReserved;
  return AddressClass::kPublic;
}

AddressClass ClassifyIpv6(const unsigned char b[16]) {
  static constexpr unsigned char kZero[16] = {};
  const auto all_zero = [&](int from, int to) {
    return std::memcmp(b + from, kZero, static_cast<size_t>(to - from)) == 0;
  };
  // ::/128 and ::1/128
  if (all_zero(0, 15)) return b[15] == 0 ? AddressClass::kUnspecified : AddressClass::kLoopback;
  // IPv4-mapped ::ffff:0:0/96: the socket would reach the IPv4 address inside.
  if (all_zero(0, 10) && b[10] == 0xff && b[11] == 0xff) return ClassifyIpv4(LoadV4(b + 12));
  // IPv4-compatible ::a.b.c.d/96 (deprecated, but some stacks still route it).
  if (all_zero(0, 12)) return ClassifyIpv4(LoadV4(b + 12));
  // NAT64 well-known prefix 64:ff9b::/96 translates to the embedded IPv4 address.
  if (b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b && all_zero(4, 12))
    return ClassifyIpv4(LoadV4(b + 12));
  // Local-use NAT64 64:ff9b:1::/48.
  if (b[0] == 0x00 && b[1] == 0x64 && b[2] == 0xff && b[3] == 0x9b && b[4] == 0x00 &&
      b[5] == 0x01)
    return AddressClass::kPrivate;
  // 6to4 2002::/16 embeds an IPv4 address in bits 16..48.
  if (b[0] == 0x20 && b[1] == 0x02) return ClassifyIpv4(LoadV4(b + 2));
  if (b[0] == 0xff) return AddressClass::kMulticast;
  if ((b[0] & 0xfe) == 0xfc) return AddressClass::kPrivate;                     // fc00::/7
  if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80) return AddressClass::kLinkLocal;  // fe80::/10
  if (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0) return AddressClass::kPrivate;    // fec0::/10
  if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8)
    return AddressClass::kDocumentation;  // 2001:db8::/32
  // Discard-only 100::/64.
  if (b[0] == 0x01 && b[1] == 0x00 && all_zero(2, 8)) return AddressClass::kReserved;
  // 2001::/23 IETF protocol assignments (Teredo 2001::/32 and ORCHID among them).
  if (b[0] == 0x20 && b[1] == 0x01 && (b[2] & 0xfe) == 0x00) return AddressClass::kReserved;
  // Only global unicast 2000::/3 is public; the rest of the space is unassigned.
  if ((b[0] & 0xe0) != 0x20) return AddressClass::kReserved;
  return AddressClass::kPublic;
}

AddressClass ClassifySockaddr(const sockaddr* address) {
  if (address == nullptr) return AddressClass::kReserved;
  if (address->sa_family == AF_INET) {
    sockaddr_in in{};
    std::memcpy(&in, address, sizeof(in));
    return ClassifyIpv4(ntohl(in.sin_addr.s_addr));
  }
  if (address->sa_family == AF_INET6) {
    sockaddr_in6 in6{};
    std::memcpy(&in6, address, sizeof(in6));
    return ClassifyIpv6(in6.sin6_addr.s6_addr);
  }
  return AddressClass::kReserved;
}

std::optional<AddressClass> ClassifyAddressText(std::string_view text) {
  if (text.size() >= 2 && text.front() == '[' && text.back() == ']')
    text = text.substr(1, text.size() - 2);
  // Drop an IPv6 zone id ("fe80::1%eth0"): the class does not depend on it.
  if (auto pct = text.find('%'); pct != std::string_view::npos) text = text.substr(0, pct);
  if (text.empty() || text.size() > 64) return std::nullopt;
  const std::string s(text);
  in_addr v4{};
  if (inet_pton(AF_INET, s.c_str(), &v4) == 1) return ClassifyIpv4(ntohl(v4.s_addr));
  in6_addr v6{};
  if (inet_pton(AF_INET6, s.c_str(), &v6) == 1) return ClassifyIpv6(v6.s6_addr);
  return std::nullopt;
}

}  // namespace celeriac::http
