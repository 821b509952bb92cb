#pragma once
// Pool: a fixed-size set of Postgres connections, and transactions that retry what can be
// retried.
//
// Transact(fn) runs `fn` inside a transaction on a pooled connection and commits. When the
// attempt fails with an error a retry can fix (connection lost before commit, serialization
// failure, deadlock, server shutting down or starting), the whole transaction is run again on a
// fresh or healthy connection, after a backoff, up to `max_attempts`. So `fn` may run several
// times: it must not have effects outside the transaction. An error returned by `fn` itself
// rolls back and is returned as it is, without retry.
//
// A lost connection while COMMIT was in flight is "in doubt": that error is not retryable, since
// the commit may have happened; callers that need certainty make their writes idempotent.
//
// Errors never carry a password of `url` (core/base/secrets.hpp): libpq quotes pieces of a
// malformed connection string in its messages.
//
// Threading: thread-safe. Acquire() blocks while every connection is leased.
//
// This header names libpqxx's types without including libpqxx: only core/pg and the state/
// library (which alone reads and writes Celeriac's tables) run SQL, through core/pg/sql.hpp.

#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <utility>
#include <vector>

// libpqxx's transaction type, for Transact's signature (core/pg/sql.hpp includes libpqxx).
namespace pqxx {
class transaction_base;
}  // namespace pqxx

#include "core/base/backoff.hpp"
#include "core/base/result.hpp"

namespace celeriac::pg {

struct PoolOptions {
  std::string url;                    // libpq URL or key=value string
  size_t size = 4;
  int connect_timeout_s = 5;
  int max_attempts = 5;               // per Transact()
  BackoffPolicy backoff{std::chrono::milliseconds(50), std::chrono::milliseconds(2000), 2.0, true};
  std::optional<std::string> schema;  // search_path for every connection (tests isolate by schema)
  std::chrono::milliseconds acquire_timeout{30'000};
};

enum class Isolation { kReadCommitted, kRepeatableRead, kSerializable };

// Maps an exception thrown by libpqxx to an Error whose retryable bit is right.
Error ClassifyPgError(const std::exception& e);

// A libpqxx connection (defined in core/pg/sql.hpp).
class Connection;

class Pool {
 public:
  explicit Pool(PoolOptions options);
  ~Pool();
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  // Runs fn in a transaction and commits; see the header comment for retries.
  template <typename T>
  Result<T> Transact(const std::function<Result<T>(pqxx::transaction_base&)>& fn,
                     Isolation isolation = Isolation::kReadCommitted);

  // Convenience for transactions that return nothing but may fail.
  Status Execute(const std::function<Status(pqxx::transaction_base&)>& fn,
                 Isolation isolation = Isolation::kReadCommitted) {
    return RunWithRetry(fn, isolation);
  }

  // SELECT 1 on a pooled connection, for readiness checks.
  Status Ping();

  const PoolOptions& options() const { return options_; }

  // A connection on loan; returned to the pool (or discarded if broken) on destruction.
  class Lease {
   public:
    Lease(Pool* pool, std::unique_ptr<Connection> conn);
    Lease(Lease&& other) noexcept;
    Lease& operator=(Lease&&) = delete;
    ~Lease();
    Connection& operator*() { return *conn_; }
    Connection* operator->() { return conn_.get(); }
    // Drops the connection instead of returning it (after it broke).
    void Discard();

   private:
    Pool* pool_;
    std::unique_ptr<Connection> conn_;
  };

  Result<Lease> Acquire();

 private:
  // One attempt. An error that `body` returned sets *from_body and is never retried.
  Status RunOnce(const std::function<Status(pqxx::transaction_base&)>& body, Isolation isolation,
                 bool* from_body);
  Status RunWithRetry(const std::function<Status(pqxx::transaction_base&)>& body,
                      Isolation isolation);
  Result<std::unique_ptr<Connection>> Open();
  void Release(std::unique_ptr<Connection> conn);

  PoolOptions options_;
  Backoff backoff_;
  std::mutex mutex_;
  std::condition_variable available_;
  std::vector<std::unique_ptr<Connection>> idle_;
  size_t open_ = 0;  // idle + leased
};

template <typename T>
Result<T> Pool::Transact(const std::function<Result<T>(pqxx::transaction_base&)>& fn,
                         Isolation isolation) {
  std::optional<Result<T>> out;
  const Status st = RunWithRetry(
      [&](pqxx::transaction_base& tx) -> Status {
        out.emplace(fn(tx));
        if (!out->ok()) return out->error();
        return Ok();
      },
      isolation);
  if (!st) return st.error();
  return std::move(*out);
}

}  // namespace celeriac::pg
