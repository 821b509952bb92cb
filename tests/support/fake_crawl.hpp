#pragma once
// Fakes for the extractor pipeline's edges: a Fetcher serving pages from a map (or a function),
// and a Module reading a tiny line format instead of HTML, so engine and store tests steer every
// page without a network or a parser.
//
// FakeModule page format, one directive per line:
//   item KEY VALUE      an item {"key": KEY, "value": VALUE} keyed by KEY
//   link URL            a followed link, page type "page", depth + 1
//   next URL            a pagination link, same depth, pagination_index + 1
//   bad                 an item error (e.g. a required field missing)
//   fail                the page cannot be parsed at all (a Parse error)

#include <atomic>
#include <functional>
#include <map>
#include <mutex>
#include <sstream>
#include <string>

#include "core/loop/scheduler.hpp"
#include "extractor/engine/fetcher.hpp"
#include "extractor/module/module.hpp"

namespace celeriac::testing {

struct FakePage {
  int status = 200;
  std::string body;
  std::optional<std::string> retry_after;
  std::optional<Error> failure;  // a transport failure instead of a response
};

class FakeFetcher final : public extractor::Fetcher {
 public:
  using Handler = std::function<FakePage(const extractor::FetchRequest&, int call)>;
  FakeFetcher(Scheduler& loop, Handler handler) : loop_(loop), handler_(std::move(handler)) {}

  void Fetch(extractor::FetchRequest request, Done done) override {
    int call;
    {
      std::lock_guard lock(mutex_);
      call = ++calls_[request.url];
    }
    ++in_flight_;
    // A site without robots.txt unless the handler serves one.
    FakePage page = request.url.ends_with("/robots.txt") && !serve_robots
                        ? FakePage{404, "", std::nullopt, std::nullopt}
                        : handler_(request, call);
    loop_.Post([this, request = std::move(request), page = std::move(page),
                done = std::move(done)]() mutable {
      --in_flight_;
      if (page.failure) return done(*page.failure, "connect");
      extractor::FetchResponse r;
      r.status = page.status;
      r.final_url = request.url;
      r.content_type = "text/plain";
      r.bytes = page.body.size();
      r.body = std::move(page.body);
      r.retry_after = page.retry_after;
      done(std::move(r), "");
    });
  }
  size_t in_flight() const override { return in_flight_; }
  bool serve_robots = false;  // pass /robots.txt to the handler too
  int Calls(const std::string& url) {
    std::lock_guard lock(mutex_);
    return calls_[url];
  }
  int TotalCalls() {
    std::lock_guard lock(mutex_);
    int n = 0;
    for (const auto& [_, c] : calls_) n += c;
    return n;
  }

 private:
  Scheduler& loop_;
  Handler handler_;
  std::mutex mutex_;
  std::map<std::string, int> calls_;
  std::atomic<size_t> in_flight_{0};
};

class FakeModule final : public extractor::Module {
 public:
  explicit FakeModule(std::vector<std::string> start) : start_(std::move(start)) {}
  std::vector<extractor::RequestSpec> Generate() const override {
    std::vector<extractor::RequestSpec> out;
    for (const auto& u : start_) {
      extractor::RequestSpec s;
      s.url = u;
      s.page_type = "page";
      out.push_back(s);
    }
    return out;
  }
  Result<extractor::ParseOutcome> Parse(const extractor::Page& page) const override {
    extractor::ParseOutcome out;
    std::istringstream in{std::string(page.body)};
    std::string verb;
    while (in >> verb) {
      if (verb == "item") {
        std::string key, value;
        in >> key >> value;
        extractor::Item item;
        item.key = "[\"" + key + "\"]";
        item.data = {{"key", key}, {"value", value}};
        item.content_hash = value;
        out.items.push_back(std::move(item));
      } else if (verb == "link" || verb == "next") {
        std::string url;
        in >> url;
        extractor::RequestSpec s;
        s.url = url;
        s.page_type = "page";
        s.is_pagination = verb == "next";
        s.stop_when_no_new_items = s.is_pagination;
        s.depth = page.depth + (s.is_pagination ? 0 : 1);
        s.pagination_index = s.is_pagination ? page.pagination_index + 1 : 0;
        out.requests.push_back(std::move(s));
      } else if (verb == "bad") {
        out.item_errors.push_back("required field missing");
      } else if (verb == "fail") {
        return Error(ErrorCode::kInvalidArgument, "page cannot be parsed", false);
      }
    }
    return out;
  }

 private:
  std::vector<std::string> start_;
};

}  // namespace celeriac::testing
