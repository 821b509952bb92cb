#pragma once
// SQL through libpqxx: for core/pg and the state/ library only (the one place that reads and
// writes Celeriac's tables). Components hold a pg::Pool and call state/'s narrow interfaces.

#include <string>

#include <pqxx/pqxx>

#include "core/pg/pool.hpp"

namespace celeriac::pg {

// A pooled connection is a libpqxx connection: `*lease` can be used wherever libpqxx wants one.
class Connection : public pqxx::connection {
 public:
  explicit Connection(const std::string& options) : pqxx::connection(options) {}
};

}  // namespace celeriac::pg
