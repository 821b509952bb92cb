#pragma once
// PgTaskStateStore: task states in task_results (migrations/0002), as Celery's database
// backend keeps them, for the admin API and for the worker's check of redelivered messages.
//
// Threading: thread-safe (the Pool is).

#include <chrono>

#include "core/pg/pool.hpp"
#include "core/worker/sinks.hpp"

namespace celeriac::state {

class PgTaskStateStore final : public worker::TaskStateSink {
 public:
  explicit PgTaskStateStore(pg::Pool& pool) : pool_(pool) {}
  Status Record(const worker::TaskStateRecord& record) override;
  Result<std::optional<worker::StoredTaskState>> Lookup(const std::string& task_id) override;
  // Deletes finished states older than `max_age` (celery.backend_cleanup).
  Status Cleanup(std::chrono::seconds max_age);

 private:
  pg::Pool& pool_;
};

}  // namespace celeriac::state
