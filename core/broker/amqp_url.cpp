#include "core/broker/amqp_url.hpp"

#include <algorithm>
#include <cstdlib>
#include <optional>
#include <string>

#include "core/base/secrets.hpp"
#include "core/base/text.hpp"
#include "core/url/query.hpp"
#include "core/url/url.hpp"

namespace celeriac::broker {
namespace {

constexpr const char* kExpected = "expected amqp://user:password@host:port/vhost";

// kombu reads an empty host ("amqp://", "amqp:///vhost", "amqp://user:pw@:5672/") as localhost;
// curl's parser wants one, so it is written in. This only finds where the host would start
// (after the last '@' of the authority); the URL is split by curl.
std::string WithHost(const std::string& url, size_t authority) {
  const size_t end = std::min(url.find_first_of("/?#", authority), url.size());
  const size_t at = url.rfind('@', end - 1);  // end >= authority > 0
  const size_t host = at != std::string::npos && at >= authority ? at + 1 : authority;
  if (host < end && url[host] != ':') return url;
  std::string out = url;
  out.insert(host, "localhost");
  return out;
}

}  // namespace

Result<AmqpUrl> ParseAmqpUrl(const std::string& url) {
  AmqpUrl out;
  size_t authority = 0;
  if (url.rfind("amqp://", 0) == 0) {
    authority = 7;
  } else if (url.rfind("amqps://", 0) == 0) {
    authority = 8;
    out.tls = true;
  } else {
    // Never the URL itself: whatever it holds may include a password.
    return Error(ErrorCode::kInvalidArgument,
                 "not an AMQP URL (" + DescribeUrlScheme(url) + "): " + kExpected);
  }
  // The vhost is a name: "/a/../b" is not "/b".
  auto parts =
      url::Parse(WithHost(url, authority), {.keep_dot_segments = true, .allow_spaces = true});
  if (!parts.ok())
    return Error(ErrorCode::kInvalidArgument, std::string("bad AMQP URL: ") + kExpected);
  out.host = parts->host;
  if (out.host.front() == '[') out.host = out.host.substr(1, out.host.size() - 2);  // IPv6
  out.port = parts->EffectivePort();

  // user and password, percent-decoded; guest for what the URL leaves out (kombu's defaults).
  out.user = "guest";
  out.password = "guest";
  if (!parts->userinfo.empty()) {
    const size_t colon = parts->userinfo.find(':');
    auto user = PercentDecodeStrict(parts->userinfo.substr(0, colon));
    std::optional<std::string> password;
    if (colon != std::string::npos)
      password = PercentDecodeStrict(parts->userinfo.substr(colon + 1));
    if (!user || (colon != std::string::npos && !password))
      return Error(ErrorCode::kInvalidArgument,
                   std::string("bad percent-encoding in the credentials of an AMQP URL: ") +
                       kExpected);
    out.user = std::move(*user);
    if (password) out.password = std::move(*password);
  }

  // kombu: the path minus its leading '/' is the vhost, percent-decoded; empty means "/".
  // So "//" and "/%2F" are "/", and "/" or no path at all are "/" too.
  auto vhost = PercentDecodeStrict(std::string_view(parts->path).substr(1));
  if (!vhost) {
    return Error(ErrorCode::kInvalidArgument,
                 "bad percent-encoding in the vhost of " + MaskSecrets(url));
  }
  out.vhost = std::move(*vhost);
  if (out.vhost.empty()) out.vhost = "/";

  // Query parameters: heartbeat is honoured; the others kombu knows are transport options we do
  // not implement, so they are refused rather than silently ignored.
  for (const std::string_view argument : url::SplitQuery(parts->query)) {
    const size_t eq = argument.find('=');
    const std::string key(argument.substr(0, eq));
    const std::string value(eq == std::string_view::npos ? std::string_view()
                                                         : argument.substr(eq + 1));
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
