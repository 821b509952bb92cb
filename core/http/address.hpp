#pragma once
// Address classification for the crawl's network policy: which IP addresses a request may
// connect to when it does not allow the private network.
//
// A crawl must reach only public addresses unless its config allows otherwise, so the client
// checks the address it actually connects to (after DNS, on every redirect hop). Anything that
// is not plainly public is refused: loopback, RFC 1918 private, unique-local (fc00::/7),
// link-local, CGNAT (100.64/10), multicast, unspecified (0.0.0.0/8, ::), broadcast,
// documentation and benchmarking ranges, and reserved space. IPv6 forms that embed an IPv4
// address (IPv4-mapped ::ffff:a.b.c.d, IPv4-compatible ::a.b.c.d, NAT64 64:ff9b::/96 and 6to4
// 2002::/16) are classified by the IPv4 address inside them.
//
// Pure functions, no I/O; safe from any thread.

#include <cstdint>
#include <optional>
#include <string_view>

struct sockaddr;

namespace celeriac::http {

enum class AddressClass {
  kPublic,
  kUnspecified,    // 0.0.0.0/8, ::
  kLoopback,       // 127.0.0.0/8, ::1
  kPrivate,        // 10/8, 172.16/12, 192.168/16, fc00::/7, fec0::/10, 64:ff9b:1::/48
  kLinkLocal,      // 169.254/16, fe80::/10
  kSharedCgnat,    // 100.64/10
  kMulticast,      // 224/4, ff00::/8
  kBroadcast,      // 255.255.255.255
  kDocumentation,  // 192.0.2/24, 198.51.100/24, 203.0.113/24, 2001:db8::/32
  kReserved,       // 240/4, 192.0.0/24, 198.18/15, 100::/64, 2001::/23 special use, ...
};

std::string_view ToString(AddressClass c);

inline bool IsPublic(AddressClass c) { return c == AddressClass::kPublic; }

// An IPv4 address in host byte order (a.b.c.d -> a<<24 | b<<16 | c<<8 | d).
AddressClass ClassifyIpv4(uint32_t host_order);
// 16 bytes in network order.
AddressClass ClassifyIpv6(const unsigned char bytes[16]);
// AF_INET or AF_INET6; anything else is kReserved (never connected to).
AddressClass ClassifySockaddr(const sockaddr* address);
// Dotted IPv4 or IPv6 text, brackets allowed ("[::1]"); nullopt if the text is not an IP
// literal (then it is a host name, checked after resolution).
std::optional<AddressClass> ClassifyAddressText(std::string_view text);

}  // namespace celeriac::http
