#include "orchestrator/api/api_metrics.hpp"

#include <unistd.h>

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

namespace celeriac::orchestrator::api {
namespace {

// The run statuses of crawl_runs' CHECK constraint; each is reported, 0 when no row has it.
constexpr std::array<const char*, 5> kRunStatuses = {"pending", "running", "succeeded", "failed",
                                                     "aborted"};

struct StoreCounts {
  std::map<std::string, int64_t> runs_by_status;
  std::map<std::pair<std::string, std::string>, int64_t> pending_dead_letters;
};

Result<StoreCounts> ReadCounts(pg::Pool& pool) {
  return pool.Transact<StoreCounts>([](pqxx::transaction_base& tx) -> Result<StoreCounts> {
    StoreCounts out;
    for (const auto& row : tx.exec("SELECT status, count(*) FROM crawl_runs GROUP BY status")) {
      out.runs_by_status[row[0].as<std::string>()] = row[1].as<int64_t>();
    }
    for (const auto& row : tx.exec(
             "SELECT queue, error_class, count(*) FROM dead_letters "
             "WHERE replayed_at IS NULL AND purged_at IS NULL GROUP BY queue, error_class")) {
      out.pending_dead_letters[{row[0].as<std::string>(), row[1].as<std::string>()}] =
          row[2].as<int64_t>();
    }
    return out;
  });
}

prometheus::MetricFamily GaugeFamily(std::string name, std::string help) {
  prometheus::MetricFamily family;
  family.name = std::move(name);
  family.help = std::move(help);
  family.type = prometheus::MetricType::Gauge;
  return family;
}

void AddGauge(prometheus::MetricFamily& family, std::vector<prometheus::ClientMetric::Label> labels,
              double value) {
  prometheus::ClientMetric metric;
  metric.label = std::move(labels);
  metric.gauge.value = value;
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

ApiMetrics::ApiMetrics(pg::Pool& pool)
    : pool_(pool), registry_(std::make_shared<prometheus::Registry>()) {
  requests_ = &prometheus::BuildCounter()
                   .Name("celeriac_api_http_requests_total")
                   .Help("Admin API requests answered, by method, route and status code")
                   .Register(*registry_);
  durations_ = &prometheus::BuildHistogram()
                    .Name("celeriac_api_http_request_duration_seconds")
                    .Help("Admin API request handling time, by method and route")
                    .Register(*registry_);
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

std::string ApiMetrics::Render() {
  std::vector<prometheus::MetricFamily> families = registry_->Collect();

  auto up = GaugeFamily("celeriac_api_database_up",
                        "1 if Postgres answered the counts of this scrape, else 0");
  auto counts = ReadCounts(pool_);
  AddGauge(up, {}, counts.ok() ? 1 : 0);
  families.push_back(std::move(up));
  if (counts.ok()) {
    auto runs = GaugeFamily("celeriac_crawl_runs", "Crawl runs in Postgres, by status");
    for (const char* status : kRunStatuses) {
      const auto it = counts->runs_by_status.find(status);
      AddGauge(runs, {{"status", status}},
               static_cast<double>(it == counts->runs_by_status.end() ? 0 : it->second));
    }
    families.push_back(std::move(runs));
    auto dead = GaugeFamily("celeriac_dead_letters_pending",
                            "Dead letters neither replayed nor purged, by queue and error class");
    for (const auto& [key, n] : counts->pending_dead_letters) {
      AddGauge(dead, {{"error_class", key.second}, {"queue", key.first}},
               static_cast<double>(n));
    }
    families.push_back(std::move(dead));
  }
  return prometheus::TextSerializer().Serialize(families);
}

}  // namespace celeriac::orchestrator::api
