#include "state/task_state_store.hpp"

#include <algorithm>
#include <limits>

#include "core/pg/sql.hpp"
#include "core/base/text.hpp"
#include "core/json/untrusted_json.hpp"

namespace celeriac::state {

Status PgTaskStateStore::Record(const worker::TaskStateRecord& r) {
  return pool_.Execute([&](pqxx::transaction_base& tx) -> Status {
    const std::optional<std::string> traceback =
        r.traceback ? std::optional(EscapeToStorableText(*r.traceback)) : std::nullopt;
    tx.exec_params(
        "INSERT INTO task_results (task_id, task_name, status, result, traceback, retries, "
        " queue, worker, date_done) "
        "VALUES ($1, $2, $3, $4::jsonb, $5, $6, $7, $8, "
        "        CASE WHEN $3 IN ('SUCCESS', 'FAILURE', 'REVOKED') THEN now() END) "
        "ON CONFLICT (task_id) DO UPDATE SET status = EXCLUDED.status, result = EXCLUDED.result, "
        " traceback = EXCLUDED.traceback, retries = EXCLUDED.retries, queue = EXCLUDED.queue, "
        " worker = EXCLUDED.worker, date_done = EXCLUDED.date_done, updated_at = now() "
        // The retry it published may have recorded its outcome first: a RETRY never replaces
        // the state of a later message of the task. (A dead-letter replay starts again at
        // retries 0 and does replace a FAILURE.)
        "WHERE task_results.status <> 'SUCCESS' "
        "  AND NOT (EXCLUDED.status = 'RETRY' AND task_results.retries > EXCLUDED.retries)",
        EscapeToStorableText(r.task_id), EscapeToStorableText(r.task_name),
        std::string(celery::ToString(r.state)), DumpStorableJson(r.result), traceback,
        static_cast<int>(std::clamp<int64_t>(r.retries, 0, std::numeric_limits<int32_t>::max())),
        EscapeToStorableText(r.queue), EscapeToStorableText(r.worker));
    return Ok();
  });
}

Result<std::optional<worker::StoredTaskState>> PgTaskStateStore::Lookup(const std::string& task_id) {
  using Out = std::optional<worker::StoredTaskState>;
  return pool_.Transact<Out>([&](pqxx::transaction_base& tx) -> Result<Out> {
    const auto rows = tx.exec_params(
        "SELECT status, retries FROM task_results WHERE task_id = $1",
        EscapeToStorableText(task_id));
    if (rows.empty()) return Out{};
    const auto state = celery::ParseState(rows[0][0].as<std::string>());
    if (!state) return Out{};
    return Out{worker::StoredTaskState{*state, rows[0][1].as<int64_t>()}};
  });
}

}  // namespace celeriac::state
