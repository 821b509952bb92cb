#include "core/pg/pool.hpp"

#include "core/pg/sql.hpp"

#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "core/base/secrets.hpp"

namespace celeriac::pg {
namespace {

std::string WithConnectTimeout(const std::string& url, int seconds) {
  if (url.find("connect_timeout") != std::string::npos) return url;
  const bool is_uri = url.rfind("postgres://", 0) == 0 || url.rfind("postgresql://", 0) == 0;
  if (!is_uri) return url + " connect_timeout=" + std::to_string(seconds);
  return url + (url.find('?') == std::string::npos ? "?" : "&") +
         "connect_timeout=" + std::to_string(seconds);
}

// The error with every password of `url` hidden from its message.
Error MaskedFor(const Error& e, const std::string& url) {
  return Error(e.code(), MaskSecrets(e.message(), url), e.retryable());
}

bool StartsWith(const std::string& s, std::string_view prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

}  // namespace

Error ClassifyPgError(const std::exception& e) {
  if (dynamic_cast<const pqxx::in_doubt_error*>(&e) != nullptr) {
    return Error(ErrorCode::kUnavailable,
                 std::string("connection lost during commit, outcome unknown: ") + e.what(),
                 /*retryable=*/false);
  }
  // libpqxx 6 derives these from pqxx::failure, not pqxx::sql_error: check them first.
  if (dynamic_cast<const pqxx::statement_completion_unknown*>(&e) != nullptr) {
    return Error(ErrorCode::kUnavailable,
                 std::string("statement outcome unknown: ") + e.what(), /*retryable=*/false);
  }
  if (dynamic_cast<const pqxx::transaction_rollback*>(&e) != nullptr) {
    // Serialization failure (40001) or deadlock (40P01): the transaction lost a race.
    return Error(ErrorCode::kConflict, std::string("transaction rolled back: ") + e.what());
  }
  if (dynamic_cast<const pqxx::broken_connection*>(&e) != nullptr)
    return Error(ErrorCode::kUnavailable, std::string("postgres connection: ") + e.what());
  if (const auto* sql = dynamic_cast<const pqxx::sql_error*>(&e)) {
    const std::string state = sql->sqlstate();
    std::string msg = e.what();
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
    msg = fmt::format("{} [SQLSTATE {}]", msg, state.empty() ? "?" : state);
    if (state == "40001" || state == "40P01") return Error(ErrorCode::kConflict, msg);
    // Connection exceptions, admin shutdown, crash shutdown, cannot connect now.
    if (StartsWith(state, "08") || state == "57P01" || state == "57P02" || state == "57P03")
      return Error(ErrorCode::kUnavailable, msg);
    if (state == "23505") return Error(ErrorCode::kAlreadyExists, msg);
    if (StartsWith(state, "23") || StartsWith(state, "22"))
      return Error(ErrorCode::kInvalidArgument, msg);
    if (state == "42501") return Error(ErrorCode::kPermissionDenied, msg);
    return Error(ErrorCode::kInternal, msg);
  }
  return Error(ErrorCode::kInternal, e.what());
}

Pool::Pool(PoolOptions options) : options_(std::move(options)), backoff_(options_.backoff) {}

Pool::~Pool() = default;

Pool::Lease::~Lease() {
  if (pool_ != nullptr && conn_) {
    pool_->Release(std::move(conn_));
  } else if (pool_ != nullptr) {
    // Discarded or moved-from with a pool: free the slot so another connection can open.
    pool_->Release(nullptr);
  }
}

Pool::Lease::Lease(Pool* pool, std::unique_ptr<Connection> conn)
    : pool_(pool), conn_(std::move(conn)) {}

Pool::Lease::Lease(Lease&& other) noexcept
    : pool_(std::exchange(other.pool_, nullptr)), conn_(std::move(other.conn_)) {}

void Pool::Lease::Discard() { conn_.reset(); }

Result<std::unique_ptr<Connection>> Pool::Open() {
  try {
    auto conn = std::make_unique<Connection>(
        WithConnectTimeout(options_.url, options_.connect_timeout_s));
    if (options_.schema) {
      pqxx::nontransaction tx(*conn);
      tx.exec("SET search_path TO " + tx.quote_name(*options_.schema));
    }
    return conn;
  } catch (const std::exception& e) {
    // libpq's errors about a malformed connection string quote pieces of it.
    return MaskedFor(ClassifyPgError(e), options_.url);
  }
}

Result<Pool::Lease> Pool::Acquire() {
  std::unique_lock lock(mutex_);
  const auto deadline = std::chrono::steady_clock::now() + options_.acquire_timeout;
  while (idle_.empty() && open_ >= options_.size) {
    if (available_.wait_until(lock, deadline) == std::cv_status::timeout &&
        idle_.empty() && open_ >= options_.size) {
      return Error(ErrorCode::kTimeout,
                   fmt::format("no postgres connection free within {} ms (pool size {})",
                               options_.acquire_timeout.count(), options_.size));
    }
  }
  if (!idle_.empty()) {
    auto conn = std::move(idle_.back());
    idle_.pop_back();
    return Lease(this, std::move(conn));
  }
  ++open_;
  lock.unlock();
  auto conn = Open();
  if (!conn) {
    std::lock_guard relock(mutex_);
    --open_;
    available_.notify_one();
    return conn.error();
  }
  return Lease(this, std::move(conn.value()));
}

void Pool::Release(std::unique_ptr<Connection> conn) {
  std::lock_guard lock(mutex_);
  if (conn && conn->is_open()) {
    idle_.push_back(std::move(conn));
  } else {
    --open_;
  }
  available_.notify_one();
}

Status Pool::RunOnce(const std::function<Status(pqxx::transaction_base&)>& body,
                     Isolation isolation, bool* from_body) {
  *from_body = false;
  auto lease = Acquire();
  if (!lease) return lease.error();
  try {
    auto run = [&](auto& tx) -> Status {
      Status st = body(tx);
      if (!st) {
        *from_body = true;
        tx.abort();
        return st;
      }
      tx.commit();
      return Ok();
    };
    switch (isolation) {
      case Isolation::kReadCommitted: {
        pqxx::transaction<pqxx::read_committed> tx(**lease);
        return run(tx);
      }
      case Isolation::kRepeatableRead: {
        pqxx::transaction<pqxx::repeatable_read> tx(**lease);
        return run(tx);
      }
      case Isolation::kSerializable: {
        pqxx::transaction<pqxx::serializable> tx(**lease);
        return run(tx);
      }
    }
    return Error(ErrorCode::kInternal, "unknown isolation level");
  } catch (const std::exception& e) {
    Error err = MaskedFor(ClassifyPgError(e), options_.url);
    if (!lease.value()->is_open() || err.code() == ErrorCode::kUnavailable) lease->Discard();
    return err;
  }
}

Status Pool::RunWithRetry(const std::function<Status(pqxx::transaction_base&)>& body,
                          Isolation isolation) {
  for (int attempt = 0;; ++attempt) {
    bool from_body = false;
    Status st = RunOnce(body, isolation, &from_body);
    if (st.ok() || from_body || !st.error().retryable() || attempt + 1 >= options_.max_attempts)
      return st;
    const auto delay = backoff_.Delay(attempt);
    spdlog::warn("postgres transaction attempt {} of {} failed, retrying in {} ms: {}",
                 attempt + 1, options_.max_attempts, delay.count(), st.error().message());
    std::this_thread::sleep_for(delay);
  }
}

Status Pool::Ping() {
  return Execute([](pqxx::transaction_base& tx) -> Status {
    tx.exec("SELECT 1");
    return Ok();
  });
}

}  // namespace celeriac::pg
