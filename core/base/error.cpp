#include "core/base/error.hpp"

namespace celeriac {

std::string_view ToString(ErrorCode code) {
  switch (code) {
    case ErrorCode::kInvalidArgument: return "InvalidArgument";
    case ErrorCode::kNotFound: return "NotFound";
    case ErrorCode::kAlreadyExists: return "AlreadyExists";
    case ErrorCode::kUnavailable: return "Unavailable";
    case ErrorCode::kTimeout: return "Timeout";
    case ErrorCode::kConflict: return "Conflict";
    case ErrorCode::kPermissionDenied: return "PermissionDenied";
    case ErrorCode::kProtocol: return "Protocol";
    case ErrorCode::kInternal: return "Internal";
  }
  return "Unknown";
}

bool RetryableByDefault(ErrorCode code) {
  return code == ErrorCode::kUnavailable || code == ErrorCode::kTimeout ||
         code == ErrorCode::kConflict;
}

std::string Error::ToString() const {
  std::string out(celeriac::ToString(code_));
  out += ": ";
  out += message_;
  out += retryable_ ? " (retryable)" : " (not retryable)";
  return out;
}

}  // namespace celeriac
