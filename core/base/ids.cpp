#include "core/base/ids.hpp"

#include <unistd.h>
#include <uuid/uuid.h>

#include <cctype>

namespace celeriac {
namespace {

std::string Text(const uuid_t id) {
  char out[37];
  uuid_unparse_lower(id, out);
  return std::string(out, 36);
}

}  // namespace

std::string NewUuid4() {
  uuid_t id;
  uuid_generate_random(id);
  return Text(id);
}

std::string NameUuid5(std::string_view namespace_uuid, std::string_view name) {
  uuid_t ns{};
  const std::string ns_text(namespace_uuid);
  (void)uuid_parse(ns_text.c_str(), ns);  // the caller's constant; a malformed one reads as nil
  uuid_t id;
  uuid_generate_sha1(id, ns, name.data(), name.size());
  return Text(id);
}

bool IsUuid(std::string_view text) {
  if (text.size() != 36) return false;
  for (size_t i = 0; i < text.size(); ++i) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (text[i] != '-') return false;
    } else if (!std::isxdigit(static_cast<unsigned char>(text[i]))) {
      return false;
    }
  }
  return true;
}

std::string HostName() {
  char host[256] = {};
  if (gethostname(host, sizeof(host) - 1) != 0) return "localhost";
  return host;
}

}  // namespace celeriac
