#pragma once
// PgTaskStateStore: task states in task_results (migrations/0002), as Celery's database
// backend keeps them, for the admin API and for the worker's check of redelivered messages.
// Finished states are deleted by retention (state/retention.hpp) once they are old.
//
// Threading: thread-safe (the Pool is).

#include "core/pg/pool.hpp"
#include "core/worker/sinks.hpp"

namespace celeriac::state {

class PgTaskStateStore final : public worker::TaskStateSink {
 public:
  explicit PgTaskStateStore(pg::Pool& pool) : pool_(pool) {}
  Status Record(const worker::TaskStateRecord& record) override;
  Result<std::optional<worker::StoredTaskState>> Lookup(const std::string& task_id) override;

 private:
  pg::Pool& pool_;
};

}  // namespace celeriac::state
