// bench_http_client: fetches N URLs with C requests in flight through http::Client on one loop
// thread, and prints requests/s, bytes/s, errors and latency percentiles. Use it beside wrk on
// the same server (run.py does both).
//
//   bench_http_client --url http://127.0.0.1:8080/page.html -n 50000 -c 64

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>

#include "core/http/client.hpp"
#include "core/loop/loop.hpp"

using namespace celeriac;
using Clock = std::chrono::steady_clock;

int main(int argc, char** argv) {
  CLI::App app("fetch N URLs with C in flight through celeriac::http::Client");
  std::vector<std::string> urls;
  long total = 10000;
  int concurrency = 64;
  long warmup = 1000;
  bool http2 = true;
  std::string ca_file;
  app.add_option("--url", urls, "URL(s) to fetch round-robin")->required();
  app.add_option("-n", total, "requests to time");
  app.add_option("-c", concurrency, "requests in flight");
  app.add_option("--warmup", warmup, "requests before timing starts (opens connections)");
  app.add_flag("!--http1", http2, "pin HTTP/1.1 on https");
  app.add_option("--ca-file", ca_file, "CA file for https");
  CLI11_PARSE(app, argc, argv);

  Loop loop;
  http::Client client(loop);
  long started = 0, finished = 0, errors = 0, non_200 = 0;
  int64_t body_bytes = 0;
  std::map<std::string, long> error_kinds;
  std::vector<double> latencies_ms;
  latencies_ms.reserve(static_cast<size_t>(total));
  const long all = total + warmup;
  Clock::time_point t0;

  std::function<void()> start_one = [&] {
    http::Request r;
    r.url = urls[static_cast<size_t>(started) % urls.size()];
    r.allow_private_network = true;  // a local server
    r.http2 = http2;
    r.ca_file = ca_file;
    ++started;
    const auto sent = Clock::now();
    client.Start(std::move(r), [&, sent](http::Outcome o) {
      ++finished;
      if (finished == warmup) t0 = Clock::now();
      if (!o.ok()) {
        ++errors;
        ++error_kinds[std::string(http::ToString(o.kind()))];
      } else {
        if (o->status != 200) ++non_200;
        if (finished > warmup) {
          body_bytes += static_cast<int64_t>(o->body.size());
          latencies_ms.push_back(
              std::chrono::duration<double, std::milli>(Clock::now() - sent).count());
        }
      }
      if (started < all) start_one();
      if (finished == all) loop.Stop();
    });
  };
  if (warmup == 0) t0 = Clock::now();
  for (int i = 0; i < concurrency && started < all; ++i) start_one();
  loop.Run();
  const double secs = std::chrono::duration<double>(Clock::now() - t0).count();

  std::sort(latencies_ms.begin(), latencies_ms.end());
  const auto pct = [&](double p) {
    if (latencies_ms.empty()) return 0.0;
    return latencies_ms[std::min(latencies_ms.size() - 1,
                                 static_cast<size_t>(p * static_cast<double>(latencies_ms.size())))];
  };
  std::printf("requests %ld  concurrency %d  seconds %.3f\n", total, concurrency, secs);
  std::printf("requests/s %.0f  MB/s %.1f  errors %ld  non-200 %ld\n",
              static_cast<double>(total) / secs, static_cast<double>(body_bytes) / secs / 1e6,
              errors, non_200);
  std::printf("latency ms p50 %.2f  p90 %.2f  p99 %.2f\n", pct(0.50), pct(0.90), pct(0.99));
  for (const auto& [kind, n] : error_kinds) std::printf("  error %s: %ld\n", kind.c_str(), n);
  return errors == 0 ? 0 : 1;
}
