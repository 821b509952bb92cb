#pragma once
// Inserting a dead letter inside a caller's transaction: the one INSERT INTO dead_letters (for
// state/'s .cpp files only; the crawl store records a failed request's letter with its result).

#include <cstdint>
#include <string>

#include "core/pg/sql.hpp"
#include "state/dead_letter_store.hpp"

namespace celeriac::state {

// Returns the new row's id.
int64_t InsertDeadLetter(pqxx::transaction_base& tx, const DeadLetterColumns& columns,
                         const std::string& body);

}  // namespace celeriac::state
