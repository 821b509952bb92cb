#pragma once
// Admission: how jobs come into this extractor and leave it. An extract message claims its job,
// compiles the job's config into a module and puts the start requests in the frontier; a
// refetch message puts one dead request back. A job that a lease names is compiled once per
// process (RuntimeFor) and forgotten when it ends (Finished); a config that does not compile
// fails its job (error class Parse).
//
// Threading: the store thread only (it calls the Frontier).

#include <functional>
#include <map>
#include <memory>
#include <unordered_map>
#include <vector>

#include "core/base/result.hpp"
#include "extractor/engine/work.hpp"

namespace celeriac::extractor {

class Admission {
 public:
  // `ended` runs for every job that ended, once its end is recorded.
  Admission(Frontier& frontier, ModuleFactory modules,
            std::function<void(const FinishedJob&)> ended);

  // Claims and starts the job of an extract message. True when it started (there is work to
  // lease); false when it had been started already, or its config was rejected and the job
  // failed. Either way the message's work is durable once this returns without an error.
  Result<bool> Admit(const ExtractRequest& request);
  // Replays a request that failed for good (Frontier::Refetch).
  Status Refetch(int64_t request_id, const std::string& celery_task_id);

  // The runtime of a job, compiled on first use; nullptr when the job cannot be loaded or its
  // config is rejected (the job then fails).
  std::shared_ptr<const JobRuntime> RuntimeFor(int64_t job_id);
  // The limits of the jobs of `batch` that still run here.
  std::map<int64_t, JobLimits> LimitsOf(const std::vector<RequestResult>& batch) const;

  // Jobs that ended: their runtimes go, and `ended` runs for each.
  void Finished(const std::vector<FinishedJob>& jobs);
  // The watchdog: ends the jobs that made no progress for too long.
  void Watchdog();

 private:
  Frontier& frontier_;
  ModuleFactory modules_;
  std::function<void(const FinishedJob&)> ended_;
  std::unordered_map<int64_t, std::shared_ptr<const JobRuntime>> runtimes_;
};

}  // namespace celeriac::extractor
