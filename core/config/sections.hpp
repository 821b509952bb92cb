#pragma once
// Settings: one TOML file shared by every Celeriac process, and the environment.
//
// Each key `[section] key` can be overridden by the environment variable
// CELERIAC_<SECTION>_<KEY> (upper case), e.g. CELERIAC_BROKER_URL, CELERIAC_DATABASE_URL.
// Precedence: built-in default < TOML file < environment. Defaults work against the local
// stack that `./dev up` starts on loopback.
//
// Each section belongs to the component that uses it: its settings struct, with defaults, the
// table of its keys and their declaration (a config::Section, section.hpp), lives in the
// component's folder. A binary's settings are a struct of the sections it uses, with
//
//   void Declare(config::Sections& sections);
//
// which adds each section it reads (Add) and names the sections of the shared file that belong
// to another binary (Ignore), so that one file serves every process.
//
// Loading fails, with a message naming the key and where its value came from, for a section
// the binary neither reads nor ignores, an unknown key in a section it reads, a value of the
// wrong type, or a value out of range. An ignored section is not read at all: the binary that
// reads it checks it. Processes load settings once at start-up and treat a failure as fatal.

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "core/base/result.hpp"
#include "core/config/section.hpp"

namespace celeriac::config {

// Reads environment variables; tests pass their own.
using EnvLookup = std::function<std::optional<std::string>(const std::string& name)>;
EnvLookup ProcessEnv();

// The sections one binary reads, bound to its settings, and the ones it leaves to others.
// Naming a section twice is a programming error (std::logic_error).
class Sections {
 public:
  Sections& Add(Section section);
  // A section of the shared file that another binary reads and checks.
  Sections& Ignore(std::string section);

  // Defaults (the fields as they are), then the TOML file at `path` (if given), then the
  // environment.
  Status Load(const std::optional<std::string>& path, const EnvLookup& env);
  // Same, with the TOML document given as text (`origin` names it in errors).
  Status Parse(std::string_view toml_text, std::string_view origin, const EnvLookup& env);

  // "section.key = value" lines of the sections read, in the order added, for `config show`:
  // secret keys as "***", and every other string through MaskSecrets (core/base/secrets.hpp),
  // which hides passwords in URLs, key=value strings and query parameters.
  std::vector<std::string> Describe() const;

 private:
  void Claim(const std::string& section);

  std::vector<Section> read_;
  std::vector<std::string> ignored_;
};

// A binary's settings S (see above), loaded.
template <class S>
Result<S> Load(const std::optional<std::string>& path, const EnvLookup& env) {
  S settings;
  Sections sections;
  settings.Declare(sections);
  if (auto st = sections.Load(path, env); !st) return st.error();
  return settings;
}

template <class S>
Result<S> Parse(std::string_view toml_text, std::string_view origin, const EnvLookup& env) {
  S settings;
  Sections sections;
  settings.Declare(sections);
  if (auto st = sections.Parse(toml_text, origin, env); !st) return st.error();
  return settings;
}

// Sections::Describe of `settings`.
template <class S>
std::vector<std::string> Describe(const S& settings) {
  S copy = settings;  // Declare binds mutable fields; read them from a copy
  Sections sections;
  copy.Declare(sections);
  return sections.Describe();
}

}  // namespace celeriac::config
