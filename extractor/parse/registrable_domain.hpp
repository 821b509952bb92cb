#pragma once
// The registrable domain of a host (public suffix list, via libpsl), for link scope same-domain.
// URLs themselves are core/url's.
//
// Threading: reads a PSL loaded once (thread-safe).

#include <string>
#include <string_view>

namespace celeriac::extractor::parse {

// "www.example.co.uk" -> "example.co.uk" (public suffix list). An IP address, a public suffix
// itself or an unknown single label gives the host unchanged.
std::string RegistrableDomain(std::string_view host);

}  // namespace celeriac::extractor::parse
