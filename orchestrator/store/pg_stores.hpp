#pragma once
// Postgres homes of the worker's sinks: dead_letters (state/) and task_results (migrations/0002).

#include "core/pg/pool.hpp"
#include "orchestrator/worker/sinks.hpp"
#include "state/dead_letter_store.hpp"

namespace celeriac::orchestrator {

using state::PgDeadLetterStore;

class PgTaskStateStore final : public TaskStateSink {
 public:
  explicit PgTaskStateStore(pg::Pool& pool) : pool_(pool) {}
  Status Record(const TaskStateRecord& record) override;
  Result<std::optional<StoredTaskState>> Lookup(const std::string& task_id) override;
  // Deletes finished states older than `max_age` (celery.backend_cleanup).
  Status Cleanup(std::chrono::seconds max_age);

 private:
  pg::Pool& pool_;
};

using broker::PropertiesFromJson;
using broker::PropertiesToJson;

}  // namespace celeriac::orchestrator
