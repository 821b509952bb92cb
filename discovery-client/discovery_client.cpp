#include "discovery-client/discovery_client.hpp"

#include <algorithm>

#include <fmt/format.h>
#include <httplib.h>

#include "core/base/text.hpp"
#include "core/json/untrusted_json.hpp"
#include "core/url/url.hpp"

namespace celeriac::discovery {
namespace {

// The start of a body from the service, for an error message: control characters blanked, and
// storable (it ends up in dead letters).
std::string Snippet(const std::string& body) {
  constexpr size_t kMax = 200;
  std::string out = body.substr(0, kMax);
  for (char& c : out)
    if (static_cast<unsigned char>(c) < 0x20) c = ' ';
  return EscapeToStorableText(body.size() > kMax ? out + "..." : out);
}

}  // namespace

HttpDiscoveryClient::HttpDiscoveryClient(HttpDiscoveryOptions options)
    : options_(std::move(options)) {
  // Split "http://host:port/prefix" into the part httplib connects to and the path prefix.
  // Without a scheme it is http, as httplib reads "host:port". What does not parse is handed on
  // whole: httplib refuses it, and Discover says so.
  scheme_host_port_ = options_.base_url;
  auto u = url::ParseHttpUrl(options_.base_url);
  if (!u.ok() && options_.base_url.find("://") == std::string::npos)
    u = url::ParseHttpUrl("http://" + options_.base_url);
  if (u.ok()) {
    scheme_host_port_ = u->Origin();
    path_prefix_ = u->path;
  }
  while (!path_prefix_.empty() && path_prefix_.back() == '/') path_prefix_.pop_back();
}

Result<DiscoverResponse> HttpDiscoveryClient::Discover(const DiscoverRequest& request) {
  httplib::Client client(scheme_host_port_);
  if (!client.is_valid())
    return Error(ErrorCode::kInvalidArgument,
                 fmt::format("discovery.url '{}' is not a usable http URL", options_.base_url));
  const auto ms = [](std::chrono::milliseconds d) {
    return std::chrono::duration_cast<std::chrono::microseconds>(d);
  };
  auto connect_timeout = options_.connect_timeout;
  auto timeout = options_.timeout;
  if (request.deadline) {
    // The caller must be done by then: each phase gets at most what is left.
    const auto left = std::max(*request.deadline, std::chrono::milliseconds(1));
    connect_timeout = std::min(connect_timeout, left);
    timeout = std::min(timeout, left);
  }
  client.set_connection_timeout(ms(connect_timeout));
  client.set_read_timeout(ms(timeout));
  client.set_write_timeout(ms(timeout));
  httplib::Headers headers;
  if (!request.idempotency_key.empty())
    headers.emplace("Idempotency-Key", EscapeToStorableText(request.idempotency_key));

  const nlohmann::json payload = {{"data_source_id", request.data_source_id},
                                  {"theme_name", request.theme_name}};
  const std::string url = path_prefix_ + "/discover";
  auto res = client.Post(url, headers, payload.dump(), "application/json");
  if (!res) {
    const auto err = res.error();
    const bool timeout = err == httplib::Error::Read || err == httplib::Error::Write ||
                         err == httplib::Error::ConnectionTimeout;
    return Error(timeout ? ErrorCode::kTimeout : ErrorCode::kUnavailable,
                 fmt::format("POST {}{}: {}", options_.base_url, "/discover",
                             httplib::to_string(err)));
  }
  const int status = res->status;
  if (status >= 500 || status == 429 || status == 408) {
    return Error(ErrorCode::kUnavailable,
                 fmt::format("POST {}/discover answered {}: {}", options_.base_url, status,
                             Snippet(res->body)));
  }
  if (status < 200 || status >= 300) {
    const auto code = status == 401 || status == 403 ? ErrorCode::kPermissionDenied
                      : status == 404                ? ErrorCode::kNotFound
                                                     : ErrorCode::kInvalidArgument;
    return Error(code,
                 fmt::format("POST {}/discover refused the request with {}: {}",
                             options_.base_url, status, Snippet(res->body)),
                 /*retryable=*/false);
  }
  DiscoverResponse out;
  out.status = status;
  if (res->body.empty()) return out;  // 202 Accepted with no body is fine
  auto parsed = ParseUntrustedJson(res->body);
  if (parsed) out.body = std::move(*parsed);
  if (!parsed || !out.body.is_object()) {
    return Error(ErrorCode::kProtocol,
                 fmt::format("POST {}/discover answered {} with a body that is not a JSON "
                             "object: {}",
                             options_.base_url, status, Snippet(res->body)),
                 /*retryable=*/false);
  }
  for (const char* key : {"analysis_id", "id"}) {
    auto it = out.body.find(key);
    if (it == out.body.end()) continue;
    if (it->is_string()) out.analysis_id = it->get<std::string>();
    if (it->is_number_integer()) out.analysis_id = std::to_string(it->get<int64_t>());
    if (out.analysis_id) break;
  }
  return out;
}

}  // namespace celeriac::discovery
