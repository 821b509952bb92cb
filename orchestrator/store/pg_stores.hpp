#pragma once
// Postgres homes of the worker's sinks: dead_letters and task_results (migrations/0002).

#include "core/pg/pool.hpp"
#include "orchestrator/worker/sinks.hpp"

namespace celeriac::orchestrator {

class PgDeadLetterStore final : public DeadLetterSink {
 public:
  explicit PgDeadLetterStore(pg::Pool& pool) : pool_(pool) {}
  Result<int64_t> Write(const DeadLetter& letter) override;

 private:
  pg::Pool& pool_;
};

class PgTaskStateStore final : public TaskStateSink {
 public:
  explicit PgTaskStateStore(pg::Pool& pool) : pool_(pool) {}
  Status Record(const TaskStateRecord& record) override;
  // Deletes finished states older than `max_age` (celery.backend_cleanup).
  Status Cleanup(std::chrono::seconds max_age);

 private:
  pg::Pool& pool_;
};

using broker::PropertiesFromJson;
using broker::PropertiesToJson;

}  // namespace celeriac::orchestrator
