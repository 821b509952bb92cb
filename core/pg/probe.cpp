#include "core/pg/probe.hpp"

#include <libpq-fe.h>
#include <poll.h>

#include <cerrno>
#include <cstring>
#include <memory>

#include "core/base/secrets.hpp"

namespace celeriac::pg {
namespace {

using Clock = std::chrono::steady_clock;

// libpq's messages end in a newline and may hold several lines.
std::string OneLine(const char* text) {
  std::string out = text == nullptr ? "" : text;
  while (!out.empty() && (out.back() == '\n' || out.back() == ' ')) out.pop_back();
  for (char& c : out)
    if (c == '\n' || c == '\t') c = ' ';
  return out;
}

// Waits until `fd` is ready for `events` or the deadline passes; false on the deadline.
Status WaitFor(int fd, short events, Clock::time_point deadline, std::chrono::milliseconds timeout) {
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0 || fd < 0) break;
    pollfd p{fd, events, 0};
    const int rc = poll(&p, 1, static_cast<int>(left));
    if (rc > 0) return Ok();
    if (rc < 0 && errno != EINTR)
      return Error(ErrorCode::kUnavailable, std::string("poll: ") + std::strerror(errno));
  }
  return Error(ErrorCode::kTimeout,
               "postgres did not answer within " + std::to_string(timeout.count()) + " ms");
}

}  // namespace

Status ProbeDatabase(const std::string& url, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  std::unique_ptr<PGconn, decltype(&PQfinish)> conn(PQconnectStart(url.c_str()), &PQfinish);
  auto failed = [&](const char* what) {
    return Error(ErrorCode::kUnavailable,
                 MaskSecrets(std::string(what) + ": " + OneLine(PQerrorMessage(conn.get())), url));
  };
  if (!conn) return Error(ErrorCode::kInternal, "libpq: out of memory");
  if (PQstatus(conn.get()) == CONNECTION_BAD) return failed("postgres connection");

  // As libpq's documentation says: first wait as if PQconnectPoll had said "writing".
  PostgresPollingStatusType state = PGRES_POLLING_WRITING;
  while (state != PGRES_POLLING_OK) {
    if (state == PGRES_POLLING_FAILED) return failed("postgres connection");
    const short events = state == PGRES_POLLING_READING ? POLLIN : POLLOUT;
    if (auto st = WaitFor(PQsocket(conn.get()), events, deadline, timeout); !st) return st;
    state = PQconnectPoll(conn.get());
  }

  if (PQsetnonblocking(conn.get(), 1) != 0 || PQsendQuery(conn.get(), "SELECT 1") == 0)
    return failed("SELECT 1");
  for (int rc = PQflush(conn.get()); rc != 0; rc = PQflush(conn.get())) {
    if (rc < 0) return failed("SELECT 1");
    if (auto st = WaitFor(PQsocket(conn.get()), POLLOUT, deadline, timeout); !st) return st;
  }
  while (PQisBusy(conn.get()) != 0) {
    if (auto st = WaitFor(PQsocket(conn.get()), POLLIN, deadline, timeout); !st) return st;
    if (PQconsumeInput(conn.get()) == 0) return failed("SELECT 1");
  }
  bool answered = false;
  std::string error;
  while (PGresult* result = PQgetResult(conn.get())) {
    if (PQresultStatus(result) == PGRES_TUPLES_OK) {
      answered = true;
    } else {
      error = OneLine(PQresultErrorMessage(result));
    }
    PQclear(result);
  }
  if (!answered)
    return Error(ErrorCode::kUnavailable, MaskSecrets("SELECT 1: " + error, url));
  return Ok();
}

}  // namespace celeriac::pg
