#include "extractor/parse/registrable_domain.hpp"

#include <libpsl.h>

namespace celeriac::extractor::parse {

std::string RegistrableDomain(std::string_view host) {
  static const psl_ctx_t* psl = [] {
    const psl_ctx_t* ctx = psl_latest(nullptr);  // newest of the system list and the built-in one
    return ctx != nullptr ? ctx : psl_builtin();
  }();
  const std::string h(host);
  if (psl == nullptr || h.empty() || h.front() == '[') return h;
  if (h.find_first_not_of("0123456789.") == std::string::npos) return h;  // IPv4
  const char* domain = psl_registrable_domain(psl, h.c_str());
  return domain != nullptr ? std::string(domain) : h;
}

}  // namespace celeriac::extractor::parse
