#pragma once
// HttpFetcher: the Fetcher on core/http's libcurl multi client, one cookie jar per job.
//
// Threading: loop thread only, like http::Client.

#include <memory>
#include <unordered_map>

#include "core/http/client.hpp"
#include "extractor/engine/fetcher.hpp"

namespace celeriac::extractor {

class HttpFetcher final : public Fetcher {
 public:
  HttpFetcher(Loop& loop, http::ClientOptions options = {});
  void Fetch(FetchRequest request, Done done) override;
  void ForgetScope(int64_t scope) override { jars_.erase(scope); }
  size_t in_flight() const override { return client_.in_flight(); }

 private:
  http::Client client_;
  std::unordered_map<int64_t, std::shared_ptr<http::CookieJar>> jars_;
};

}  // namespace celeriac::extractor
