#include "core/broker/amqp_url.hpp"

#include <amqp.h>

#include <cctype>
#include <cstdlib>
#include <string>
#include <vector>

#include "core/base/secrets.hpp"
#include "core/base/text.hpp"

namespace celeriac::broker {
Result<AmqpUrl> ParseAmqpUrl(const std::string& url) {
  AmqpUrl out;
  std::string scheme;
  if (url.rfind("amqp://", 0) == 0) {
    scheme = "amqp://";
  } else if (url.rfind("amqps://", 0) == 0) {
    scheme = "amqps://";
    out.tls = true;
  } else {
    // Never the URL itself: whatever it holds may include a password.
    return Error(ErrorCode::kInvalidArgument,
                 "not an AMQP URL (" + DescribeUrlScheme(url) +
                     "): expected amqp://user:password@host:port/vhost");
  }
  const std::string rest = url.substr(scheme.size());
  const size_t authority_end = rest.find_first_of("/?#");
  const std::string authority = rest.substr(0, authority_end);
  std::string path;
  std::string query;
  if (authority_end != std::string::npos) {
    std::string tail = rest.substr(authority_end);
    const size_t hash = tail.find('#');
    if (hash != std::string::npos) tail.resize(hash);
    const size_t q = tail.find('?');
    if (q != std::string::npos) {
      query = tail.substr(q + 1);
      tail.resize(q);
    }
    path = tail;
  }
  // kombu: the path minus its leading '/' is the vhost, percent-decoded; empty means "/".
  // So "//" and "/%2F" are "/", and "/" or no path at all are "/" too.
  std::string vhost_raw = path.empty() ? "" : path.substr(1);
  auto vhost = PercentDecodeStrict(vhost_raw);
  if (!vhost) {
    return Error(ErrorCode::kInvalidArgument,
                 "bad percent-encoding in the vhost of " + MaskSecrets(url));
  }
  out.vhost = std::move(*vhost);
  if (out.vhost.empty()) out.vhost = "/";

  // rabbitmq-c parses (and percent-decodes) user, password, host and port in place.
  std::string head = scheme + authority;
  std::vector<char> buffer(head.begin(), head.end());
  buffer.push_back('\0');
  amqp_connection_info info;
  if (amqp_parse_url(buffer.data(), &info) != AMQP_STATUS_OK) {
    return Error(ErrorCode::kInvalidArgument,
                 "bad AMQP URL: expected amqp://user:password@host:port/vhost");
  }
  out.host = info.host;
  out.port = info.port;
  out.user = info.user;
  out.password = info.password;

  // Query parameters: heartbeat is honoured; the others kombu knows are transport options we do
  // not implement, so they are refused rather than silently ignored.
  size_t start = 0;
  while (start < query.size()) {
    size_t end = query.find('&', start);
    if (end == std::string::npos) end = query.size();
    const std::string pair = query.substr(start, end - start);
    start = end + 1;
    if (pair.empty()) continue;
    const size_t eq = pair.find('=');
    const std::string key = pair.substr(0, eq);
    const std::string value = eq == std::string::npos ? "" : pair.substr(eq + 1);
    if (key == "heartbeat") {
      char* endp = nullptr;
      const long v = std::strtol(value.c_str(), &endp, 10);
      if (value.empty() || *endp != '\0' || v < 0 || v > 65535) {
        return Error(ErrorCode::kInvalidArgument, "bad heartbeat in AMQP URL: '" + value + "'");
      }
      out.heartbeat = std::chrono::seconds(v);
    } else {
      return Error(ErrorCode::kInvalidArgument,
                   "unsupported AMQP URL parameter '" + key + "' (only heartbeat is)");
    }
  }
  return out;
}

}  // namespace celeriac::broker
