#pragma once
// ConfigModule: the Module (extractor/module/module.hpp) built from a crawl_configs.config
// document (schemas/crawl_config.schema.json; every key's description there is the contract).
//
// CompileConfig validates the document against the schema, then checks what the schema cannot:
// start_page and every route_to name a page type; item.key names fields of the item; regexes,
// CSS selectors, XPath expressions and JSONPaths compile; selectors suit the page format
// (css/xpath need html, xml or auto; jsonpath needs json or auto; a container's fields must use
// the container's kind of selector, or regex / const / url). Every error is InvalidArgument
// (non-retryable; a Parse-class error for the job) and names the JSON pointer of the offending
// value, e.g. "/pages/detail/item/fields/price/pipeline/0/regex: regex does not compile ...".
// Everything is compiled once; Parse only evaluates.
//
// Decisions the schema leaves open (documented here because they are behaviour):
// - Page types are tried for match.url_regex routing in name order (JSONB does not keep key
//   order, so "first" cannot mean document order).
// - Values: css/xpath give strings (an XPath number or boolean result stays a JSON number or
//   boolean); jsonpath gives JSON values; regex on the body gives the capture as UTF-8 (decoded
//   from the page's charset). Empty strings and nulls count as "no value".
// - multiple: false feeds the first match into the pipeline and keeps its first result;
//   multiple: true feeds every match and keeps the list, unless the pipeline contains `join`
//   or `first`, which reduce it to one value. No value and no default: the field is left out of
//   the item (and a required field makes the item invalid); an explicit default is used as is.
// - Text processors (trim, normalize_space, regex, replace, split, lower, strip_tags, urljoin)
//   act on strings; numbers and booleans are first turned into their JSON text; null, arrays
//   and objects pass unchanged. `regex` drops a value it does not match. `lower` is ASCII.
//   `text: own` is the element's direct text children, whitespace-collapsed like normalized.
// - cast int gives a JSON integer (int64); cast decimal gives a JSON *string* holding the
//   decimal exactly as written, normalised (sign, no leading zeros, scale kept: "0012.50" ->
//   "12.50"), so no precision is lost; cast bool accepts true/false/1/0/yes/no/on/off (any
//   case) and numbers; cast date parses with the strftime format and gives ISO 8601: a UTC
//   "YYYY-MM-DDTHH:MM:SSZ" when the format has %z, "YYYY-MM-DDTHH:MM:SS" when it has a time,
//   else "YYYY-MM-DD". A value that does not cast is dropped.
// - Nested container fields: one object per container match; an object missing one of its
//   required fields is dropped.
// - Item key: canonical JSON text of the key values, in key order (e.g. `["978-0"]`); an item
//   whose key value is missing, or which misses a required field, is dropped and reported in
//   item_errors. content_hash: SHA-256 (hex) of the canonical JSON (sorted keys, no spaces) of
//   the item's data without its `vary` fields.
// - Every request the module makes uses request.method and request.body (the schema: "how every
//   page of this crawl is fetched").
// - Links: selector results (elements give `attr`, attribute and text nodes their value,
//   jsonpath string values) are resolved against the page URL (or the HTML <base href>),
//   fragments stripped, only http(s) kept; then allow (any match), deny (wins), scope, depth
//   (rule max_depth is the deepest page followed from; limits.max_depth the deepest link), and
//   routing; duplicates within a page are dropped. same-domain compares registrable domains
//   (public suffix list via libpsl).
// - Pagination requests keep page type and depth, take pagination_index + 1 and are marked
//   is_pagination, up to max_pages per first page. {param}: the next value is the page URL's
//   current value (or start + index * step when absent) + step, not beyond max.
//   stop_when_no_new_items is copied into RequestSpec.stop_when_no_new_items; the pipeline
//   applies it.
//
// Threading: a compiled ConfigModule is immutable; Generate and Parse run concurrently.
// Parse never throws and never crashes on hostile bodies (see markup.hpp for the libxml2
// limits); an undecodable JSON body is a non-retryable Protocol error (Parse class).

#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/base/result.hpp"
#include "extractor/parse/crawl_settings.hpp"
#include "extractor/module/module.hpp"

namespace celeriac::extractor::parse {

struct CompiledConfig;

class ConfigModule final : public Module {
 public:
  explicit ConfigModule(std::shared_ptr<const CompiledConfig> compiled);
  ~ConfigModule() override;

  std::vector<RequestSpec> Generate() const override;
  Result<ParseOutcome> Parse(const Page& page) const override;

  const CrawlSettings& settings() const;
  const std::string& name() const;   // the config's name, "" if it has none
  std::vector<std::string> PageTypes() const;

 private:
  std::shared_ptr<const CompiledConfig> compiled_;
};

Result<std::shared_ptr<const ConfigModule>> CompileConfig(const nlohmann::json& config);

}  // namespace celeriac::extractor::parse
