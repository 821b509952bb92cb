#pragma once
// Work: one leased request on its way through the engine, with the running job it belongs to.
// Every room of the engine hands Work to the next; JobRuntime is built once per job and process
// (Admission) and shared read-only by every thread.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "extractor/parse/crawl_settings.hpp"
#include "extractor/engine/fetcher.hpp"
#include "extractor/module/module.hpp"
#include "state/frontier.hpp"
#include "state/host_ledger.hpp"

namespace celeriac::extractor {

// The crawl's durable state lives in state/ (the one home of Celeriac's tables).
using state::CommitReport;
using state::ExtractRequest;
using state::FinishedJob;
using state::Frontier;
using state::HostLedger;
using state::HostSlot;
using state::JobInfo;
using state::JobLimits;
using state::LeasedRequest;
using state::RequestResult;
using state::StoredRobots;

// Builds the module for a job's config (the config-driven module, or a registered C++ one).
using ModuleFactory =
    std::function<Result<std::shared_ptr<const Module>>(const nlohmann::json& config)>;

// A running job as this process runs it.
struct JobRuntime {
  JobInfo info;
  parse::CrawlSettings settings;
  std::shared_ptr<const Module> module;
  JobLimits limits;  // what the frontier enforces when it records the job's results
};

struct Work {
  LeasedRequest lease;
  std::shared_ptr<const JobRuntime> job;
  std::string host;  // HostKey of its run and URL: the queue it waits in
};

// scheme://host[:port] (url::Url::Origin: lower case, the port only when not the scheme's
// default; "" when the URL does not parse): what robots.txt and politeness apply to.
std::string OriginOf(const std::string& url);
// One host (origin) of one run: "run_id origin".
std::string HostKey(int64_t run_id, const std::string& url);

Work MakeWork(LeasedRequest lease, std::shared_ptr<const JobRuntime> job);
JobLimits LimitsOf(const parse::CrawlSettings& settings);

// What the Fetcher is asked for `spec`: the job's headers, agent, timeouts, size cap, proxy and
// cookie jar (one per job).
FetchRequest MakeFetch(const JobRuntime& job, const RequestSpec& spec,
                       const std::string& default_user_agent);

}  // namespace celeriac::extractor
