#include "extractor/pipeline/http_fetcher.hpp"

namespace celeriac::extractor {

HttpFetcher::HttpFetcher(Loop& loop, http::ClientOptions options)
    : client_(loop, std::move(options)) {}

void HttpFetcher::Fetch(FetchRequest r, Done done) {
  http::Request req;
  req.url = std::move(r.url);
  req.method = std::move(r.method);
  req.body = std::move(r.body);
  req.headers = std::move(r.headers);
  req.user_agent = std::move(r.user_agent);
  if (r.cookies) {
    auto& jar = jars_[r.cookie_scope];
    if (!jar) jar = std::make_shared<http::CookieJar>();
    req.cookies = jar;
  }
  req.proxy = r.proxy.value_or("");
  req.allow_private_network = r.allow_private_network;
  req.max_redirects = r.max_redirects;
  req.connect_timeout = r.connect_timeout;
  req.first_byte_timeout = r.timeout;
  req.idle_timeout = r.timeout;
  req.total_timeout = r.timeout;
  req.max_body_bytes = r.max_bytes;
  client_.Start(std::move(req), [done = std::move(done)](http::Outcome outcome) {
    if (!outcome.ok()) {
      const auto kind = std::string(http::ToString(outcome.kind()));
      return done(outcome.error(), kind);
    }
    http::Response& resp = outcome.value();
    FetchResponse out;
    out.status = resp.status;
    out.final_url = std::move(resp.url);
    out.content_type = std::move(resp.content_type);
    out.bytes = resp.body.size();
    if (auto ra = resp.headers.Get("Retry-After")) out.retry_after = std::string(*ra);
    out.body = std::move(resp.body);
    done(std::move(out), "");
  });
}

}  // namespace celeriac::extractor
