#pragma once
// Error: what went wrong across an I/O boundary, and whether trying again can help.
// The retryable bit is the one decision every caller needs: reconnect, Celery RETRY, or dead letter.

#include <string>
#include <string_view>

namespace celeriac {

enum class ErrorCode {
  kInvalidArgument,  // caller's input is wrong; retrying the same input fails the same way
  kNotFound,
  kAlreadyExists,
  kUnavailable,      // peer unreachable or overloaded; retry later
  kTimeout,          // no answer in time; retry later
  kConflict,         // lost a race (serialization failure, deadlock); retry now
  kPermissionDenied,
  kProtocol,         // peer spoke something we cannot decode
  kInternal,
};

std::string_view ToString(ErrorCode code);

// Whether an error of this code is worth retrying when the caller did not say otherwise.
bool RetryableByDefault(ErrorCode code);

class Error {
 public:
  Error(ErrorCode code, std::string message)
      : code_(code), message_(std::move(message)), retryable_(RetryableByDefault(code)) {}
  Error(ErrorCode code, std::string message, bool retryable)
      : code_(code), message_(std::move(message)), retryable_(retryable) {}

  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }
  bool retryable() const { return retryable_; }

  // "Unavailable: connection refused (retryable)"
  std::string ToString() const;

 private:
  ErrorCode code_;
  std::string message_;
  bool retryable_;
};

}  // namespace celeriac
