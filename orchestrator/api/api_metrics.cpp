#include "orchestrator/api/api_metrics.hpp"

#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <fstream>
#include <map>
#include <sstream>
#include <utility>
#include <vector>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/metric_family.h>
#include <prometheus/registry.h>
#include <prometheus/text_serializer.h>

#include "state/crawl_figures.hpp"

namespace celeriac::orchestrator::api {
namespace {

// The run statuses of crawl_runs' CHECK constraint; each is reported, 0 when no row has it.
constexpr std::array<const char*, 5> kRunStatuses = {"pending", "running", "succeeded", "failed",
                                                     "aborted"};
// The extractor's error classes (SPEC 5); each is reported for a recent run, 0 until seen.
constexpr std::array<const char*, 6> kErrorClasses = {"Download", "HttpStatus", "Auth",
                                                      "RateLimit", "Parse", "Store"};

}  // namespace

struct ApiMetrics::StoreFigures : state::CrawlFigures {
  bool ok = false;  // the read answered
};

namespace {

using StoreFigures = ApiMetrics::StoreFigures;

prometheus::MetricFamily GaugeFamily(std::string name, std::string help) {
  prometheus::MetricFamily family;
  family.name = std::move(name);
  family.help = std::move(help);
  family.type = prometheus::MetricType::Gauge;
  return family;
}

prometheus::MetricFamily CounterFamily(std::string name, std::string help) {
  auto family = GaugeFamily(std::move(name), std::move(help));
  family.type = prometheus::MetricType::Counter;
  return family;
}

void AddGauge(prometheus::MetricFamily& family, std::vector<prometheus::ClientMetric::Label> labels,
              double value) {
  prometheus::ClientMetric metric;
  metric.label = std::move(labels);
  metric.gauge.value = value;
  family.metric.push_back(std::move(metric));
}

void AddCounter(prometheus::MetricFamily& family,
                std::vector<prometheus::ClientMetric::Label> labels, double value) {
  prometheus::ClientMetric metric;
  metric.label = std::move(labels);
  metric.counter.value = value;
  family.metric.push_back(std::move(metric));
}

}  // namespace

double ProcessStartTimeSeconds() {
  // Field 22 of /proc/self/stat is the start time in clock ticks after boot; /proc/stat's btime
  // is the boot time in Unix seconds.
  const double now = std::chrono::duration<double>(
                         std::chrono::system_clock::now().time_since_epoch())
                         .count();
  std::ifstream stat("/proc/self/stat");
  std::string line;
  if (!std::getline(stat, line)) return now;
  const auto close = line.rfind(')');  // the command name may hold spaces and parentheses
  if (close == std::string::npos) return now;
  std::istringstream fields(line.substr(close + 2));
  std::string field;
  unsigned long long start_ticks = 0;
  for (int i = 3; i <= 22 && (fields >> field); ++i) {
    if (i == 22) start_ticks = std::stoull(field);
  }
  std::ifstream proc_stat("/proc/stat");
  long long boot = 0;
  while (std::getline(proc_stat, line)) {
    if (line.rfind("btime ", 0) == 0) boot = std::stoll(line.substr(6));
  }
  const long ticks = sysconf(_SC_CLK_TCK);
  if (boot <= 0 || ticks <= 0 || start_ticks == 0) return now;
  return static_cast<double>(boot) + static_cast<double>(start_ticks) / static_cast<double>(ticks);
}

ApiMetrics::ApiMetrics(pg::Pool& pool, const Clock& clock, ApiMetricsOptions options)
    : pool_(pool),
      clock_(clock),
      options_(options),
      registry_(std::make_shared<prometheus::Registry>()) {
  requests_ = &prometheus::BuildCounter()
                   .Name("celeriac_api_http_requests_total")
                   .Help("Admin API requests answered, by method, route and status code")
                   .Register(*registry_);
  durations_ = &prometheus::BuildHistogram()
                    .Name("celeriac_api_http_request_duration_seconds")
                    .Help("Admin API request handling time, by method and route")
                    .Register(*registry_);
  refused_ = &prometheus::BuildCounter()
                  .Name("celeriac_api_connections_refused_total")
                  .Help("Admin API connections refused with 503 because every server thread "
                        "was busy and the wait queue full")
                  .Register(*registry_)
                  .Add({});
  prometheus::BuildGauge()
      .Name("process_start_time_seconds")
      .Help("Start time of the process since the Unix epoch, in seconds")
      .Register(*registry_)
      .Add({})
      .Set(ProcessStartTimeSeconds());
}

ApiMetrics::~ApiMetrics() = default;

void ApiMetrics::ObserveRequest(const std::string& method, const std::string& route, int status,
                                double seconds) {
  requests_->Add({{"method", method}, {"route", route}, {"code", std::to_string(status)}})
      .Increment();
  static const prometheus::Histogram::BucketBoundaries kBuckets = {
      0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
  durations_->Add({{"method", method}, {"route", route}}, kBuckets).Observe(seconds);
}

void ApiMetrics::ObserveRefusedConnection() { refused_->Increment(); }

std::shared_ptr<const ApiMetrics::StoreFigures> ApiMetrics::Figures() {
  std::lock_guard lock(cache_mutex_);
  const auto now = clock_.Monotonic();
  if (cache_ && now - cache_read_at_ < options_.cache_ttl) return cache_;
  auto figures = std::make_shared<StoreFigures>();
  state::CrawlFiguresOptions read;
  read.query_timeout = options_.query_timeout;
  read.recent_since = clock_.Now() - options_.recent_window;
  read.max_runs = static_cast<int64_t>(options_.max_runs);
  read.max_hosts = static_cast<int64_t>(options_.max_hosts);
  if (auto got = state::ReadCrawlFigures(pool_, read)) {
    static_cast<state::CrawlFigures&>(*figures) = std::move(*got);
    figures->ok = true;
  }
  // A failed read is kept too: an unreachable Postgres is not asked again by every scrape.
  cache_ = std::move(figures);
  cache_read_at_ = clock_.Monotonic();
  return cache_;
}

std::string ApiMetrics::Render() {
  std::vector<prometheus::MetricFamily> families = registry_->Collect();

  const auto figures = Figures();
  auto up = GaugeFamily("celeriac_api_database_up",
                        "1 if Postgres answered the counts of this scrape, else 0");
  AddGauge(up, {}, figures->ok ? 1 : 0);
  families.push_back(std::move(up));
  if (!figures->ok) return prometheus::TextSerializer().Serialize(families);

  auto runs = GaugeFamily("celeriac_crawl_runs", "Crawl runs in Postgres, by status");
  for (const char* status : kRunStatuses) {
    const auto it = figures->runs_by_status.find(status);
    AddGauge(runs, {{"status", status}},
             static_cast<double>(it == figures->runs_by_status.end() ? 0 : it->second));
  }
  families.push_back(std::move(runs));

  auto pages = CounterFamily("celeriac_crawl_run_pages_total",
                             "Pages fetched and parsed by a crawl run that is running or "
                             "finished within the last hour");
  auto errors = CounterFamily("celeriac_crawl_run_errors_total",
                              "Errors of a crawl run that is running or finished within the "
                              "last hour, by error class");
  for (const auto& run : figures->recent_runs) {
    const std::string id = std::to_string(run.id);
    AddCounter(pages, {{"run_id", id}}, static_cast<double>(run.pages));
    std::map<std::string, int64_t> classes = run.errors;
    for (const char* c : kErrorClasses) classes.try_emplace(c, 0);
    for (const auto& [c, n] : classes) {
      AddCounter(errors, {{"error_class", c}, {"run_id", id}}, static_cast<double>(n));
    }
  }
  families.push_back(std::move(pages));
  families.push_back(std::move(errors));

  auto state = GaugeFamily("celeriac_crawl_host_state",
                           "1 for each host of a running crawl run, labelled with its politeness "
                           "state (ok, slowed, backing_off)");
  auto delay = GaugeFamily("celeriac_crawl_host_delay_seconds",
                           "Current gap between request starts to a host of a running crawl run");
  for (const auto& h : figures->hosts) {
    const std::string id = std::to_string(h.run_id);
    AddGauge(state, {{"host", h.host}, {"run_id", id}, {"state", h.state}}, 1);
    AddGauge(delay, {{"host", h.host}, {"run_id", id}}, static_cast<double>(h.delay_ms) / 1000.0);
  }
  families.push_back(std::move(state));
  families.push_back(std::move(delay));

  auto requests = GaugeFamily("celeriac_crawl_requests",
                              "Requests of the running crawl runs that are pending, leased (in "
                              "flight) or failed");
  for (const auto& [request_state, n] : figures->requests_by_state) {
    AddGauge(requests, {{"state", request_state}}, static_cast<double>(n));
  }
  families.push_back(std::move(requests));

  auto dead = GaugeFamily("celeriac_dead_letters_pending",
                          "Dead letters neither replayed nor purged, by queue and error class");
  for (const auto& [key, n] : figures->pending_dead_letters) {
    AddGauge(dead, {{"error_class", key.second}, {"queue", key.first}}, static_cast<double>(n));
  }
  families.push_back(std::move(dead));
  return prometheus::TextSerializer().Serialize(families);
}

}  // namespace celeriac::orchestrator::api
