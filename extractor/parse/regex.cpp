#include "extractor/parse/regex.hpp"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <cctype>
#include <string>

namespace celeriac::extractor::parse {
namespace {

constexpr uint32_t kCompileOptions =
    PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | PCRE2_ALT_BSUX | PCRE2_DOLLAR_ENDONLY;
constexpr uint32_t kMatchLimit = 2'000'000;     // backtracking steps per match call
constexpr uint32_t kDepthLimit = 10'000;        // nested backtracking frames (interpreter)
constexpr uint32_t kHeapLimitKiB = 32 * 1024;   // interpreter frame memory
constexpr size_t kJitStackMax = 1 << 20;

// Per-thread scratch: one match data block big enough for any pattern (group <= 99 in configs,
// PCRE2 allows more, so size from the pattern when it is larger) and a match context with limits.
struct Scratch {
  pcre2_match_context* context = nullptr;
  pcre2_jit_stack* jit_stack = nullptr;
  pcre2_match_data* data = nullptr;
  uint32_t data_pairs = 0;
  Scratch() {
    context = pcre2_match_context_create(nullptr);
    pcre2_set_match_limit(context, kMatchLimit);
    pcre2_set_depth_limit(context, kDepthLimit);
    pcre2_set_heap_limit(context, kHeapLimitKiB);
    jit_stack = pcre2_jit_stack_create(32 * 1024, kJitStackMax, nullptr);
    if (jit_stack != nullptr) pcre2_jit_stack_assign(context, nullptr, jit_stack);
  }
  ~Scratch() {
    if (data != nullptr) pcre2_match_data_free(data);
    if (jit_stack != nullptr) pcre2_jit_stack_free(jit_stack);
    pcre2_match_context_free(context);
  }
  pcre2_match_data* Data(uint32_t pairs) {
    if (data == nullptr || data_pairs < pairs) {
      if (data != nullptr) pcre2_match_data_free(data);
      data_pairs = pairs < 100 ? 100 : pairs;
      data = pcre2_match_data_create(data_pairs, nullptr);
    }
    return data;
  }
};

Scratch& ThreadScratch() {
  thread_local Scratch scratch;
  return scratch;
}

}  // namespace

Result<std::shared_ptr<const Regex>> Regex::Compile(std::string_view pattern) {
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  pcre2_code* code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                    kCompileOptions, &error_code, &error_offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR buffer[256];
    pcre2_get_error_message(error_code, buffer, sizeof buffer);
    return Error(ErrorCode::kInvalidArgument,
                 "regex does not compile at offset " + std::to_string(error_offset) + ": " +
                     reinterpret_cast<const char*>(buffer));
  }
  // JIT is an optimisation; without it (unsupported CPU, no memory) the interpreter runs.
  pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  uint32_t captures = 0;
  pcre2_pattern_info(code, PCRE2_INFO_CAPTURECOUNT, &captures);
  std::shared_ptr<Regex> regex(new Regex());
  regex->pattern_ = std::string(pattern);
  regex->code_ = code;
  regex->capture_count_ = static_cast<int>(captures);
  return std::shared_ptr<const Regex>(std::move(regex));
}

Regex::~Regex() {
  if (code_ != nullptr) pcre2_code_free(static_cast<pcre2_code*>(code_));
}

bool Regex::Matches(std::string_view subject) const {
  size_t offset = 0;
  return Find(subject, 0, &offset).has_value();
}

std::optional<std::string_view> Regex::Find(std::string_view subject, int group,
                                            size_t* offset) const {
  if (*offset > subject.size() || group < 0 || group > capture_count_) return std::nullopt;
  Scratch& scratch = ThreadScratch();
  pcre2_match_data* data = scratch.Data(static_cast<uint32_t>(capture_count_) + 1);
  auto* code = static_cast<pcre2_code*>(code_);
  const int rc = pcre2_match(code, reinterpret_cast<PCRE2_SPTR>(subject.data()), subject.size(),
                             *offset, 0, data, scratch.context);
  if (rc < 0) return std::nullopt;  // no match, or a limit was hit: both are "no value"
  const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data);
  const size_t start = ovector[0], end = ovector[1];
  // Step past an empty match so that a caller looping on Find always progresses.
  if (end > start) {
    *offset = end;
  } else {
    size_t next = end + 1;
    while (next < subject.size() && (static_cast<unsigned char>(subject[next]) & 0xC0) == 0x80) {
      ++next;
    }
    *offset = next;
  }
  if (group >= rc || ovector[2 * group] == PCRE2_UNSET) return std::string_view();
  return subject.substr(ovector[2 * group], ovector[2 * group + 1] - ovector[2 * group]);
}

std::optional<std::string> Regex::ReplaceAll(std::string_view subject,
                                             const std::string& replacement) const {
  Scratch& scratch = ThreadScratch();
  auto* code = static_cast<pcre2_code*>(code_);
  std::string out;
  out.resize(subject.size() + replacement.size() + 64);
  for (int attempt = 0; attempt < 2; ++attempt) {
    PCRE2_SIZE out_len = out.size();
    const int rc = pcre2_substitute(
        code, reinterpret_cast<PCRE2_SPTR>(subject.data()), subject.size(), 0,
        PCRE2_SUBSTITUTE_GLOBAL | PCRE2_SUBSTITUTE_OVERFLOW_LENGTH, nullptr, scratch.context,
        reinterpret_cast<PCRE2_SPTR>(replacement.data()), replacement.size(),
        reinterpret_cast<PCRE2_UCHAR*>(out.data()), &out_len);
    if (rc >= 0) {
      out.resize(out_len);
      return out;
    }
    if (rc != PCRE2_ERROR_NOMEMORY) return std::nullopt;
    out.resize(out_len);  // the length it needs
  }
  return std::nullopt;
}

std::string TranslateEcmaReplacement(std::string_view ecma) {
  std::string out;
  out.reserve(ecma.size() + 8);
  for (size_t i = 0; i < ecma.size(); ++i) {
    const char c = ecma[i];
    if (c != '$') {
      out += c;
      continue;
    }
    const char next = i + 1 < ecma.size() ? ecma[i + 1] : '\0';
    if (next == '$') {
      out += "$$";
      ++i;
    } else if (next == '&') {
      out += "${0}";
      ++i;
    } else if (std::isdigit(static_cast<unsigned char>(next))) {
      size_t j = i + 1;
      std::string digits;
      while (j < ecma.size() && digits.size() < 2 &&
             std::isdigit(static_cast<unsigned char>(ecma[j]))) {
        digits += ecma[j++];
      }
      out += "${" + digits + "}";
      i = j - 1;
    } else if (next == '<') {
      const size_t close = ecma.find('>', i + 2);
      if (close == std::string_view::npos) {
        out += "$$";
      } else {
        out += "${" + std::string(ecma.substr(i + 2, close - i - 2)) + "}";
        i = close;
      }
    } else {
      out += "$$";  // a lone `$` is literal in ECMAScript
    }
  }
  return out;
}

}  // namespace celeriac::extractor::parse
