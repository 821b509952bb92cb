#include "extractor/parse/config_module.hpp"

#include <openssl/sha.h>

#include <charconv>
#include <map>
#include <optional>
#include <unordered_map>
#include <unordered_set>

#include "core/url/query.hpp"
#include "core/url/url.hpp"
#include "extractor/parse/css_match.hpp"
#include "extractor/parse/css_xpath.hpp"
#include "extractor/parse/jsonpath.hpp"
#include "extractor/parse/markup.hpp"
#include "extractor/parse/processors.hpp"
#include "extractor/parse/regex.hpp"
#include "extractor/parse/text.hpp"
#include "extractor/parse/registrable_domain.hpp"
#include "schemas/schemas.hpp"

namespace celeriac::extractor::parse {

using nlohmann::json;

namespace {

constexpr size_t kMaxJsonDepth = 512;
constexpr size_t kMaxRegexMatches = 100000;  // per body-regex field and page

enum class PageFormat { kAuto, kHtml, kXml, kJson };
enum class SelectorKind { kXPath, kJsonPath };

struct NodeSelector {
  SelectorKind kind = SelectorKind::kXPath;
  std::shared_ptr<const CompiledXPath> xpath;
  std::shared_ptr<const CssMatcher> css;  // a css selector CssMatcher can match natively
  std::optional<JsonPath> jsonpath;
};

enum class SourceKind { kSelector, kRegex, kConst, kUrl, kContainer };
enum class UrlPart { kFull, kOrigin, kScheme, kHost, kPort, kPath, kQuery, kFragment, kParam };

struct FieldSpec {
  std::string name;
  SourceKind source = SourceKind::kSelector;
  NodeSelector selector;  // kSelector, kContainer
  std::shared_ptr<const Regex> regex;
  int group = 0;
  json constant;
  UrlPart url_part = UrlPart::kFull;
  std::string url_param;
  std::optional<std::string> attr;
  TextMode text = TextMode::kNormalized;
  bool multiple = false;
  bool required = false;
  bool vary = false;
  std::optional<json> default_value;
  std::vector<Processor> pipeline;
  bool reduces = false;
  std::vector<FieldSpec> fields;  // kContainer
};

struct ItemSpec {
  std::vector<std::string> key;
  std::optional<NodeSelector> container;
  std::vector<FieldSpec> fields;
  std::vector<std::string> vary;
};

enum class Scope { kSameHost, kSameDomain, kSameOrigin, kAny };

struct LinkRule {
  NodeSelector selector;
  std::string attr = "href";
  std::vector<std::shared_ptr<const Regex>> allow;
  std::vector<std::shared_ptr<const Regex>> deny;
  Scope scope = Scope::kSameHost;
  std::optional<int64_t> max_depth;
  std::string route_to;  // "" = by match.url_regex
};

struct PaginationSpec {
  bool by_param = false;
  NodeSelector next;
  std::string attr = "href";
  std::string param;
  int64_t start = 1;
  int64_t step = 1;
  std::optional<int64_t> max;
  int64_t max_pages = 100;
  bool stop_when_no_new_items = true;
};

struct PageSpec {
  std::string name;
  PageFormat format = PageFormat::kAuto;
  std::vector<std::shared_ptr<const Regex>> match;
  std::optional<ItemSpec> item;
  std::vector<LinkRule> links;
  std::optional<PaginationSpec> pagination;
  bool needs_markup = false;  // some css/xpath selector
  bool needs_body_text = false;  // some regex field
};

std::string PointerToken(const std::string& key) {
  std::string out;
  for (char c : key) {
    if (c == '~') {
      out += "~0";
    } else if (c == '/') {
      out += "~1";
    } else {
      out += c;
    }
  }
  return out;
}

std::string Ptr(const std::string& base, const std::string& key) {
  return base + "/" + PointerToken(key);
}
std::string Ptr(const std::string& base, size_t index) {
  return base + "/" + std::to_string(index);
}

Error At(const std::string& pointer, const std::string& message) {
  return Error(ErrorCode::kInvalidArgument,
               "crawl config " + (pointer.empty() ? std::string("(root)") : pointer) + ": " +
                   message);
}

std::string Sha256Hex(const std::string& data) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), digest);
  return HexEncode(std::string_view(reinterpret_cast<const char*>(digest), sizeof digest));
}

// Strings in extracted data are valid UTF-8 (libxml2 output is; body regex captures are decoded);
// this is the last guard, so that dumping an item can never throw.
void SanitizeStrings(json* v) {
  if (v->is_string()) {
    auto& s = v->get_ref<std::string&>();
    if (!IsValidUtf8(s)) s = SanitizeUtf8(s);
  } else if (v->is_array() || v->is_object()) {
    for (auto& child : *v) SanitizeStrings(&child);
  }
}

// Nesting depth of a JSON text, without parsing it (strings skipped).
size_t JsonNestingDepth(std::string_view body) {
  size_t depth = 0, max_depth = 0;
  bool in_string = false;
  for (size_t i = 0; i < body.size(); ++i) {
    const char c = body[i];
    if (in_string) {
      if (c == '\\') {
        ++i;
      } else if (c == '"') {
        in_string = false;
      }
    } else if (c == '"') {
      in_string = true;
    } else if (c == '[' || c == '{') {
      max_depth = std::max(max_depth, ++depth);
    } else if ((c == ']' || c == '}') && depth > 0) {
      --depth;
    }
  }
  return max_depth;
}

// ---------------------------------------------------------------------------------------------
// Compilation

class Compiler {
 public:
  explicit Compiler(std::map<std::string, PageSpec>* pages) : pages_(pages) {}

  Result<NodeSelector> Selector(const json& spec, const std::string& pointer, PageFormat format,
                                std::optional<SelectorKind> container_kind, PageSpec* page) {
    NodeSelector sel;
    if (auto it = spec.find("css"); it != spec.end()) {
      if (format == PageFormat::kJson) return At(Ptr(pointer, "css"), "a css selector on a json page");
      if (container_kind == SelectorKind::kJsonPath) {
        return At(Ptr(pointer, "css"), "a css selector inside a jsonpath container");
      }
      auto parsed = ParseCss(it->get<std::string>(), format != PageFormat::kXml);
      if (!parsed.ok()) return At(Ptr(pointer, "css"), parsed.error().message());
      auto compiled = CompiledXPath::Compile(ToXPath(*parsed));
      if (!compiled.ok()) return At(Ptr(pointer, "css"), compiled.error().message());
      sel.xpath = *compiled;
      sel.css = CssMatcher::Create(std::move(*parsed));
      page->needs_markup = true;
    } else if (auto it = spec.find("xpath"); it != spec.end()) {
      if (format == PageFormat::kJson) return At(Ptr(pointer, "xpath"), "an xpath on a json page");
      if (container_kind == SelectorKind::kJsonPath) {
        return At(Ptr(pointer, "xpath"), "an xpath inside a jsonpath container");
      }
      auto compiled = CompiledXPath::Compile(it->get<std::string>());
      if (!compiled.ok()) return At(Ptr(pointer, "xpath"), compiled.error().message());
      sel.xpath = *compiled;
      page->needs_markup = true;
    } else if (auto it = spec.find("jsonpath"); it != spec.end()) {
      if (format == PageFormat::kHtml || format == PageFormat::kXml) {
        return At(Ptr(pointer, "jsonpath"), "a jsonpath on a page whose format is not json");
      }
      if (container_kind == SelectorKind::kXPath) {
        return At(Ptr(pointer, "jsonpath"), "a jsonpath inside a css/xpath container");
      }
      auto path = JsonPath::Compile(it->get<std::string>());
      if (!path.ok()) return At(Ptr(pointer, "jsonpath"), path.error().message());
      sel.kind = SelectorKind::kJsonPath;
      sel.jsonpath = std::move(*path);
    } else {
      return At(pointer, "needs one of css, xpath or jsonpath");
    }
    return sel;
  }

  Result<std::shared_ptr<const Regex>> CompileRegex(const json& pattern,
                                                    const std::string& pointer) {
    auto regex = Regex::Compile(pattern.get<std::string>());
    if (!regex.ok()) return At(pointer, regex.error().message());
    return *regex;
  }

  Result<std::vector<std::shared_ptr<const Regex>>> RegexList(const json& list,
                                                              const std::string& pointer) {
    std::vector<std::shared_ptr<const Regex>> out;
    for (size_t i = 0; i < list.size(); ++i) {
      auto r = CompileRegex(list[i], Ptr(pointer, i));
      if (!r.ok()) return r.error();
      out.push_back(*r);
    }
    return out;
  }

  Result<std::vector<FieldSpec>> Fields(const json& fields, const std::string& pointer,
                                        PageFormat format,
                                        std::optional<SelectorKind> container_kind,
                                        PageSpec* page) {
    std::vector<FieldSpec> out;
    for (const auto& [name, spec] : fields.items()) {
      auto field = Field(name, spec, Ptr(pointer, name), format, container_kind, page);
      if (!field.ok()) return field.error();
      out.push_back(std::move(*field));
    }
    return out;
  }

  Result<FieldSpec> Field(const std::string& name, const json& spec, const std::string& pointer,
                          PageFormat format, std::optional<SelectorKind> container_kind,
                          PageSpec* page) {
    FieldSpec f;
    f.name = name;
    const bool xml = format == PageFormat::kXml;
    if (spec.contains("css") || spec.contains("xpath") || spec.contains("jsonpath")) {
      auto sel = Selector(spec, pointer, format, container_kind, page);
      if (!sel.ok()) return sel.error();
      f.source = SourceKind::kSelector;
      f.selector = std::move(*sel);
    } else if (auto it = spec.find("regex"); it != spec.end()) {
      f.source = SourceKind::kRegex;
      const json& pattern = it->is_string() ? *it : it->at("pattern");
      auto regex = CompileRegex(pattern, Ptr(pointer, "regex"));
      if (!regex.ok()) return regex.error();
      f.regex = *regex;
      if (it->is_object() && it->contains("group")) {
        f.group = (*it)["group"].get<int>();
        if (f.group > f.regex->capture_count()) {
          return At(Ptr(Ptr(pointer, "regex"), "group"),
                    "the pattern has only " + std::to_string(f.regex->capture_count()) +
                        " group(s)");
        }
      } else {
        f.group = f.regex->capture_count() > 0 ? 1 : 0;
      }
      page->needs_body_text = true;
    } else if (auto it = spec.find("const"); it != spec.end()) {
      f.source = SourceKind::kConst;
      f.constant = *it;
    } else if (auto it = spec.find("url"); it != spec.end()) {
      f.source = SourceKind::kUrl;
      const std::string part = it->get<std::string>();
      static const std::map<std::string, UrlPart> kParts = {
          {"full", UrlPart::kFull},   {"origin", UrlPart::kOrigin}, {"scheme", UrlPart::kScheme},
          {"host", UrlPart::kHost},   {"port", UrlPart::kPort},     {"path", UrlPart::kPath},
          {"query", UrlPart::kQuery}, {"fragment", UrlPart::kFragment}};
      if (part.starts_with("param:")) {
        f.url_part = UrlPart::kParam;
        f.url_param = part.substr(6);
      } else if (auto p = kParts.find(part); p != kParts.end()) {
        f.url_part = p->second;
      } else {
        return At(Ptr(pointer, "url"), "unknown url part \"" + part + "\"");
      }
    } else if (auto it = spec.find("container"); it != spec.end()) {
      f.source = SourceKind::kContainer;
      auto sel = Selector(*it, Ptr(pointer, "container"), format, container_kind, page);
      if (!sel.ok()) return sel.error();
      f.selector = std::move(*sel);
      auto sub = Fields(spec.at("fields"), Ptr(pointer, "fields"), format, f.selector.kind, page);
      if (!sub.ok()) return sub.error();
      f.fields = std::move(*sub);
    } else {
      return At(pointer, "a field needs a source (css, xpath, regex, jsonpath, const, url or "
                         "container)");
    }
    if (auto it = spec.find("attr"); it != spec.end()) {
      f.attr = xml ? it->get<std::string>() : AsciiLower(it->get<std::string>());
    }
    if (auto it = spec.find("text"); it != spec.end()) {
      static const std::map<std::string, TextMode> kModes = {
          {"normalized", TextMode::kNormalized}, {"raw", TextMode::kRaw}, {"own", TextMode::kOwn},
          {"html", TextMode::kHtml}, {"outer_html", TextMode::kOuterHtml}};
      auto m = kModes.find(it->get<std::string>());
      if (m == kModes.end()) return At(Ptr(pointer, "text"), "unknown text mode");
      f.text = m->second;
    }
    f.multiple = spec.value("multiple", false);
    f.required = spec.value("required", false);
    f.vary = spec.value("vary", false);
    if (auto it = spec.find("default"); it != spec.end()) f.default_value = *it;
    if (auto it = spec.find("pipeline"); it != spec.end()) {
      for (size_t i = 0; i < it->size(); ++i) {
        auto p = CompileProcessor((*it)[i]);
        if (!p.ok()) {
          const json& proc = (*it)[i];
          std::string where = Ptr(Ptr(pointer, "pipeline"), i);
          if (proc.is_object() && proc.size() == 1) where = Ptr(where, proc.begin().key());
          return At(where, p.error().message());
        }
        f.pipeline.push_back(std::move(*p));
      }
      f.reduces = PipelineReduces(f.pipeline);
    }
    return f;
  }

  Result<ItemSpec> CompileItem(const json& spec, const std::string& pointer, PageFormat format,
                        PageSpec* page) {
    ItemSpec item;
    std::optional<SelectorKind> container_kind;
    if (auto it = spec.find("container"); it != spec.end()) {
      auto sel = Selector(*it, Ptr(pointer, "container"), format, std::nullopt, page);
      if (!sel.ok()) return sel.error();
      container_kind = sel->kind;
      item.container = std::move(*sel);
    }
    auto fields = Fields(spec.at("fields"), Ptr(pointer, "fields"), format, container_kind, page);
    if (!fields.ok()) return fields.error();
    item.fields = std::move(*fields);
    const json& key = spec.at("key");
    for (size_t i = 0; i < key.size(); ++i) {
      const std::string k = key[i].get<std::string>();
      const bool exists = spec.at("fields").contains(k);
      if (!exists) return At(Ptr(Ptr(pointer, "key"), i), "names no field of the item: " + k);
      item.key.push_back(k);
    }
    for (const auto& f : item.fields) {
      if (f.vary) item.vary.push_back(f.name);
    }
    return item;
  }

  Status CompilePage(const std::string& name, const json& spec, const std::string& pointer) {
    PageSpec& page = (*pages_)[name];
    page.name = name;
    static const std::map<std::string, PageFormat> kFormats = {{"auto", PageFormat::kAuto},
                                                               {"html", PageFormat::kHtml},
                                                               {"xml", PageFormat::kXml},
                                                               {"json", PageFormat::kJson}};
    page.format = kFormats.at(spec.value("format", std::string("auto")));
    if (auto it = spec.find("match"); it != spec.end()) {
      auto list = RegexList(it->at("url_regex"), Ptr(Ptr(pointer, "match"), "url_regex"));
      if (!list.ok()) return list.error();
      page.match = std::move(*list);
    }
    if (auto it = spec.find("item"); it != spec.end()) {
      auto item = CompileItem(*it, Ptr(pointer, "item"), page.format, &page);
      if (!item.ok()) return item.error();
      page.item = std::move(*item);
    }
    if (auto it = spec.find("links"); it != spec.end()) {
      for (size_t i = 0; i < it->size(); ++i) {
        auto rule = Link((*it)[i], Ptr(Ptr(pointer, "links"), i), page.format, &page);
        if (!rule.ok()) return rule.error();
        page.links.push_back(std::move(*rule));
      }
    }
    if (auto it = spec.find("pagination"); it != spec.end()) {
      const std::string ptr = Ptr(pointer, "pagination");
      PaginationSpec p;
      if (auto next = it->find("next"); next != it->end()) {
        auto sel = Selector(*next, Ptr(ptr, "next"), page.format, std::nullopt, &page);
        if (!sel.ok()) return sel.error();
        p.next = std::move(*sel);
        p.attr = next->value("attr", std::string("href"));
        if (page.format != PageFormat::kXml) p.attr = AsciiLower(p.attr);
      } else {
        p.by_param = true;
        p.param = it->at("param").get<std::string>();
        p.start = it->value("start", int64_t{1});
        p.step = it->value("step", int64_t{1});
        if (it->contains("max")) p.max = (*it)["max"].get<int64_t>();
      }
      p.max_pages = it->value("max_pages", int64_t{100});
      p.stop_when_no_new_items = it->value("stop_when_no_new_items", true);
      page.pagination = std::move(p);
    }
    return Ok();
  }

  Result<LinkRule> Link(const json& spec, const std::string& pointer, PageFormat format,
                        PageSpec* page) {
    LinkRule rule;
    auto sel = Selector(spec, pointer, format, std::nullopt, page);
    if (!sel.ok()) return sel.error();
    rule.selector = std::move(*sel);
    rule.attr = spec.value("attr", std::string("href"));
    if (format != PageFormat::kXml) rule.attr = AsciiLower(rule.attr);
    if (auto it = spec.find("allow"); it != spec.end()) {
      auto list = RegexList(*it, Ptr(pointer, "allow"));
      if (!list.ok()) return list.error();
      rule.allow = std::move(*list);
    }
    if (auto it = spec.find("deny"); it != spec.end()) {
      auto list = RegexList(*it, Ptr(pointer, "deny"));
      if (!list.ok()) return list.error();
      rule.deny = std::move(*list);
    }
    static const std::map<std::string, Scope> kScopes = {{"same-host", Scope::kSameHost},
                                                         {"same-domain", Scope::kSameDomain},
                                                         {"same-origin", Scope::kSameOrigin},
                                                         {"any", Scope::kAny}};
    rule.scope = kScopes.at(spec.value("scope", std::string("same-host")));
    if (spec.contains("max_depth")) rule.max_depth = spec["max_depth"].get<int64_t>();
    rule.route_to = spec.value("route_to", std::string());
    return rule;
  }

 private:
  std::map<std::string, PageSpec>* pages_;
};

}  // namespace

struct CompiledConfig {
  std::string name;
  std::vector<std::string> start_urls;
  std::string start_page;
  CrawlSettings settings;
  std::map<std::string, PageSpec> pages;  // by name: also the match.url_regex routing order
  std::shared_ptr<const CompiledXPath> base_href;
};

Result<std::shared_ptr<const ConfigModule>> CompileConfig(const json& config) {
  try {
    auto validator = schemas::Get("crawl_config");
    if (!validator.ok()) return validator.error();
    if (auto st = (*validator)->Validate(config); !st.ok()) {
      return Error(ErrorCode::kInvalidArgument, st.error().message());
    }
    InitMarkup();
    auto compiled = std::make_shared<CompiledConfig>();
    compiled->name = config.value("name", std::string());
    compiled->start_page = config.at("start_page").get<std::string>();
    const json& start_urls = config.at("start_urls");
    for (size_t i = 0; i < start_urls.size(); ++i) {
      const std::string url = start_urls[i].get<std::string>();
      // The schema only asks for "http(s)://" and a host; a host or port no request can reach
      // ("http://h:1--8/") would fail each fetch of every job instead of being named here.
      if (!url::ResolveLink(url, url, false))
        return At(Ptr("/start_urls", i), "not an http(s) URL that can be fetched: " + url);
      compiled->start_urls.push_back(url);
    }
    compiled->settings = CrawlSettings::FromConfig(config);
    Compiler compiler(&compiled->pages);
    for (const auto& [name, page] : config.at("pages").items()) {
      if (auto st = compiler.CompilePage(name, page, Ptr("/pages", name)); !st.ok()) return st.error();
    }
    if (!compiled->pages.contains(compiled->start_page)) {
      return At("/start_page", "names no page type: " + compiled->start_page);
    }
    for (const auto& [name, page] : compiled->pages) {
      for (size_t i = 0; i < page.links.size(); ++i) {
        const auto& route = page.links[i].route_to;
        if (!route.empty() && !compiled->pages.contains(route)) {
          return At(Ptr(Ptr(Ptr(Ptr("/pages", name), "links"), i), "route_to"),
                    "names no page type: " + route);
        }
      }
    }
    auto base = CompiledXPath::Compile("(/html/head/base/@href)[1]");
    if (!base.ok()) return base.error();
    compiled->base_href = *base;
    return std::make_shared<const ConfigModule>(std::move(compiled));
  } catch (const std::exception& e) {
    // A schema-valid document should never get here; a bad one must not crash the job.
    return Error(ErrorCode::kInvalidArgument, std::string("crawl config: ") + e.what());
  }
}

// ---------------------------------------------------------------------------------------------
// Parsing one page

namespace {

struct Context {
  xmlNodePtr node = nullptr;      // markup context (nullptr = document)
  const json* value = nullptr;    // JSON context (nullptr = document)
};

class PageParser {
 public:
  PageParser(const CompiledConfig& config, const PageSpec& spec, const Page& page)
      : config_(config), spec_(spec), page_(page) {}

  Result<ParseOutcome> Run() {
    BodyFormat format;
    switch (spec_.format) {
      case PageFormat::kHtml: format = BodyFormat::kHtml; break;
      case PageFormat::kXml: format = BodyFormat::kXml; break;
      case PageFormat::kJson: format = BodyFormat::kJson; break;
      default: format = FormatFromContentType(page_.content_type); break;
    }
    format_ = format;
    if (format == BodyFormat::kJson) {
      std::string_view body = page_.body;
      if (body.starts_with("\xEF\xBB\xBF")) body.remove_prefix(3);
      if (JsonNestingDepth(body) > kMaxJsonDepth) {
        return Error(ErrorCode::kProtocol,
                     "page body nests JSON deeper than " + std::to_string(kMaxJsonDepth), false);
      }
      json_ = json::parse(body, nullptr, false);
      if (json_.is_discarded()) {
        return Error(ErrorCode::kProtocol, "page body is not valid JSON", false);
      }
      has_json_ = true;
      encoding_ = "UTF-8";
    } else if (format == BodyFormat::kXml) {
      encoding_ = CharsetFromContentType(page_.content_type);
      if (spec_.needs_markup || !spec_.links.empty() || spec_.pagination) {
        markup_ = MarkupDocument::ParseXml(page_.body);
      }
    } else {
      encoding_ = ChooseHtmlEncoding(page_.content_type, page_.body);
      if (spec_.needs_markup || !spec_.links.empty() || spec_.pagination) {
        markup_ = MarkupDocument::ParseHtml(page_.body, encoding_);
      }
    }
    page_url_.reset();
    if (auto parsed = url::Parse(page_.url); parsed.ok()) page_url_ = std::move(*parsed);

    ParseOutcome out;
    if (spec_.item) Items(*spec_.item, &out);
    Links(&out);
    Paginate(&out);
    return out;
  }

 private:
  // ---- selection

  // What a css or xpath selector selects under `context`: natively where the CssMatcher
  // decides (`limit` and `require_attr` as CssMatcher::Select takes them), else by the XPath
  // (then all of it).
  XPathResult SelectMarkup(const NodeSelector& sel, xmlNodePtr context, size_t limit = SIZE_MAX,
                           const char* require_attr = nullptr) {
    XPathResult r;
    if (sel.css && sel.css->Select(context, limit, require_attr, &r.nodes)) return r;
    return markup_->Select(*sel.xpath, context);
  }

  std::vector<Context> SelectNodes(const NodeSelector& sel, const Context& ctx) {
    std::vector<Context> out;
    if (sel.kind == SelectorKind::kXPath) {
      if (!markup_) return out;
      auto r = SelectMarkup(sel, ctx.node != nullptr ? ctx.node : markup_->root());
      out.reserve(r.nodes.size());
      for (xmlNodePtr n : r.nodes) out.push_back(Context{n, nullptr});
    } else {
      if (!has_json_) return out;
      std::vector<const json*> nodes;
      sel.jsonpath->Evaluate(ctx.value != nullptr ? *ctx.value : json_, &nodes);
      out.reserve(nodes.size());
      for (const json* n : nodes) out.push_back(Context{nullptr, n});
    }
    return out;
  }

  // The body as UTF-8 (what body regexes search): as is when it already is UTF-8.
  std::string_view BodyText() {
    if (!body_text_) {
      const std::string label = AsciiLower(encoding_);
      if ((label.empty() || label == "utf-8") && IsValidUtf8(page_.body)) {
        body_text_ = std::string_view(page_.body);
      } else {
        body_utf8_ = ToUtf8(page_.body, label.empty() ? "utf-8" : label);
        body_text_ = std::string_view(body_utf8_);
      }
    }
    return *body_text_;
  }

  const std::string& BaseUrl() {
    if (!base_url_) {
      base_url_ = page_.url;
      if (markup_ && markup_->html()) {
        auto r = markup_->Select(*config_.base_href, markup_->root());
        if (!r.nodes.empty()) {
          auto href = markup_->NodeAttribute(r.nodes.front(), "href");
          if (href) {
            if (auto resolved = url::ResolveLink(page_.url, *href, true)) base_url_ = *resolved;
          }
        }
      }
    }
    return *base_url_;
  }

  // ---- fields

  void RawValues(const FieldSpec& f, const Context& ctx, std::vector<json>* values) {
    switch (f.source) {
      case SourceKind::kSelector: {
        if (f.selector.kind == SelectorKind::kJsonPath) {
          for (const Context& n : SelectNodes(f.selector, ctx)) {
            if (n.value->is_null()) continue;
            values->push_back(*n.value);
            if (!f.multiple) break;
          }
          return;
        }
        if (!markup_) return;
        // One value wanted: the selection stops at the first node that gives one.
        auto r = SelectMarkup(f.selector, ctx.node != nullptr ? ctx.node : markup_->root(),
                              f.multiple ? SIZE_MAX : 1, f.attr ? f.attr->c_str() : nullptr);
        if (r.scalar) {
          values->push_back(std::move(*r.scalar));
          return;
        }
        for (xmlNodePtr n : r.nodes) {
          if (f.attr) {
            auto v = markup_->NodeAttribute(n, *f.attr);
            if (!v) continue;
            values->emplace_back(std::move(*v));
          } else {
            values->emplace_back(markup_->NodeText(n, f.text));
          }
          if (!f.multiple) break;
        }
        return;
      }
      case SourceKind::kRegex: {
        // The body does not depend on the context: search it once per page, not per container.
        auto cached = body_regex_values_.find(&f);
        if (cached == body_regex_values_.end()) {
          std::vector<json> found;
          const std::string_view body = BodyText();
          size_t offset = 0;
          while (auto m = f.regex->Find(body, f.group, &offset)) {
            found.emplace_back(std::string(*m));
            if (!f.multiple || found.size() >= kMaxRegexMatches) break;
          }
          cached = body_regex_values_.emplace(&f, std::move(found)).first;
        }
        values->insert(values->end(), cached->second.begin(), cached->second.end());
        return;
      }
      case SourceKind::kConst:
        if (f.multiple && f.constant.is_array()) {
          for (const auto& v : f.constant) values->push_back(v);
        } else {
          values->push_back(f.constant);
        }
        return;
      case SourceKind::kUrl:
        if (auto v = UrlValue(f)) values->emplace_back(SanitizeUtf8(*v));
        return;
      case SourceKind::kContainer:
        for (const Context& n : SelectNodes(f.selector, ctx)) {
          std::vector<std::string> missing;
          json object = BuildObject(f.fields, n, &missing);
          if (!missing.empty()) continue;
          values->push_back(std::move(object));
          if (!f.multiple) break;
        }
        return;
    }
  }

  std::optional<std::string> UrlValue(const FieldSpec& f) {
    if (!page_url_) return std::nullopt;
    const url::Url& u = *page_url_;
    switch (f.url_part) {
      case UrlPart::kFull: return page_.url;
      case UrlPart::kOrigin: return u.Origin();
      case UrlPart::kScheme: return u.scheme;
      case UrlPart::kHost: return u.host;
      case UrlPart::kPort: {
        const int port = u.EffectivePort();
        return port > 0 ? std::optional<std::string>(std::to_string(port)) : std::nullopt;
      }
      case UrlPart::kPath: return u.path;
      case UrlPart::kQuery:
        return !u.query.empty() ? std::optional<std::string>(u.query) : std::nullopt;
      case UrlPart::kFragment:
        return !u.fragment.empty() ? std::optional<std::string>(u.fragment) : std::nullopt;
      case UrlPart::kParam:
        return url::QueryParam(u.query, f.url_param);
    }
    return std::nullopt;
  }

  static bool HasUrlJoin(const FieldSpec& f) {
    for (const auto& p : f.pipeline) {
      if (p.kind == Processor::Kind::kUrlJoin) return true;
    }
    return false;
  }

  std::optional<json> FieldValue(const FieldSpec& f, const Context& ctx) {
    std::vector<json> values;
    RawValues(f, ctx, &values);
    if (!f.pipeline.empty() && !values.empty()) {
      RunPipeline(f.pipeline, HasUrlJoin(f) ? std::string_view(BaseUrl()) : std::string_view(),
                  &values);
    }
    std::erase_if(values, [](const json& v) {
      return v.is_null() || (v.is_string() && v.get_ref<const std::string&>().empty());
    });
    if (values.empty()) return f.default_value;
    if (f.multiple && !f.reduces) return json(std::move(values));
    return std::move(values.front());
  }

  json BuildObject(const std::vector<FieldSpec>& fields, const Context& ctx,
                   std::vector<std::string>* missing_required) {
    json object = json::object();
    for (const auto& f : fields) {
      auto value = FieldValue(f, ctx);
      if (!value || value->is_null()) {
        if (f.required) missing_required->push_back(f.name);
        if (!value) continue;
      }
      object[f.name] = std::move(*value);
    }
    return object;
  }

  void Items(const ItemSpec& item, ParseOutcome* out) {
    std::vector<Context> contexts;
    if (item.container) {
      contexts = SelectNodes(*item.container, Context{});
    } else {
      contexts.push_back(Context{});
    }
    for (size_t i = 0; i < contexts.size(); ++i) {
      std::vector<std::string> missing;
      json data = BuildObject(item.fields, contexts[i], &missing);
      const std::string which = item.container ? "item " + std::to_string(i + 1) + " of " +
                                                     std::to_string(contexts.size())
                                               : std::string("item");
      if (!missing.empty()) {
        std::string names;
        for (const auto& m : missing) names += (names.empty() ? "'" : ", '") + m + "'";
        out->item_errors.push_back(which + ": required field" +
                                   (missing.size() > 1 ? "s " : " ") + names + " missing");
        continue;
      }
      json key = json::array();
      std::string missing_key;
      for (const auto& k : item.key) {
        auto it = data.find(k);
        if (it == data.end() || it->is_null()) {
          missing_key = k;
          break;
        }
        key.push_back(*it);
      }
      if (!missing_key.empty()) {
        out->item_errors.push_back(which + ": key field '" + missing_key + "' missing");
        continue;
      }
      SanitizeStrings(&data);
      SanitizeStrings(&key);
      Item result;
      result.key = key.dump();
      if (item.vary.empty()) {
        result.content_hash = Sha256Hex(data.dump());
      } else {
        json hashed = data;
        for (const auto& v : item.vary) hashed.erase(v);
        result.content_hash = Sha256Hex(hashed.dump());
      }
      result.data = std::move(data);
      out->items.push_back(std::move(result));
    }
  }

  // ---- links and pagination

  // URLs a selector finds on the page, as written.
  std::vector<std::string> SelectUrls(const NodeSelector& sel, const std::string& attr,
                                      bool first_only) {
    std::vector<std::string> out;
    if (sel.kind == SelectorKind::kXPath) {
      if (!markup_) return out;
      auto r = SelectMarkup(sel, markup_->root(), first_only ? 1 : SIZE_MAX, attr.c_str());
      for (xmlNodePtr n : r.nodes) {
        if (auto v = markup_->NodeAttribute(n, attr)) out.push_back(std::move(*v));
        if (first_only && !out.empty()) break;
      }
      return out;
    }
    for (const Context& n : SelectNodes(sel, Context{})) {
      if (n.node != nullptr) {
        if (auto v = markup_->NodeAttribute(n.node, attr)) out.push_back(std::move(*v));
      } else if (n.value != nullptr && n.value->is_string()) {
        out.push_back(n.value->get<std::string>());
      }
      if (first_only && !out.empty()) break;
    }
    return out;
  }

  bool InScope(Scope scope, const url::Url& target) const {
    if (scope == Scope::kAny) return true;
    if (!page_url_) return false;
    switch (scope) {
      case Scope::kSameHost:
        return target.host == page_url_->host;
      case Scope::kSameOrigin:
        return target.scheme == page_url_->scheme && target.host == page_url_->host &&
               target.EffectivePort() == page_url_->EffectivePort();
      case Scope::kSameDomain:
        return target.host == page_url_->host ||
               RegistrableDomain(target.host) == RegistrableDomain(page_url_->host);
      default:
        return true;
    }
  }

  std::string Route(const LinkRule& rule, const std::string& url) const {
    if (!rule.route_to.empty()) return rule.route_to;
    for (const auto& [name, page] : config_.pages) {
      for (const auto& re : page.match) {
        if (re->Matches(url)) return name;
      }
    }
    return "";
  }

  RequestSpec MakeRequest(std::string url, std::string page_type) const {
    RequestSpec r;
    r.url = std::move(url);
    r.method = config_.settings.request.method;
    r.body = config_.settings.request.body;
    r.page_type = std::move(page_type);
    r.depth = page_.depth;
    r.pagination_index = 0;
    return r;
  }

  void Links(ParseOutcome* out) {
    if (spec_.links.empty()) return;
    const auto& limit = config_.settings.limits.max_depth;
    if (limit && page_.depth + 1 > *limit) return;
    std::unordered_set<std::string> seen;
    for (const auto& rule : spec_.links) {
      if (rule.max_depth && page_.depth > *rule.max_depth) continue;
      for (const auto& raw : SelectUrls(rule.selector, rule.attr, false)) {
        auto url = url::ResolveLink(BaseUrl(), raw, true);
        if (!url) continue;
        if (!rule.allow.empty()) {
          bool allowed = false;
          for (const auto& re : rule.allow) {
            if (re->Matches(*url)) {
              allowed = true;
              break;
            }
          }
          if (!allowed) continue;
        }
        bool denied = false;
        for (const auto& re : rule.deny) {
          if (re->Matches(*url)) {
            denied = true;
            break;
          }
        }
        if (denied) continue;
        if (rule.scope != Scope::kAny) {
          auto target = url::Parse(*url);
          if (!target.ok() || !InScope(rule.scope, *target)) continue;
        }
        std::string page_type = Route(rule, *url);
        if (page_type.empty()) continue;
        if (!seen.insert(*url + '\n' + page_type).second) continue;
        RequestSpec r = MakeRequest(std::move(*url), std::move(page_type));
        r.depth = page_.depth + 1;
        out->requests.push_back(std::move(r));
      }
    }
  }

  void Paginate(ParseOutcome* out) {
    if (!spec_.pagination) return;
    const PaginationSpec& p = *spec_.pagination;
    if (page_.pagination_index + 1 > p.max_pages) return;
    std::optional<std::string> next;
    if (!p.by_param) {
      for (const auto& raw : SelectUrls(p.next, p.attr, false)) {
        next = url::ResolveLink(BaseUrl(), raw, true);
        if (next) break;
      }
    } else {
      int64_t current = p.start + static_cast<int64_t>(page_.pagination_index) * p.step;
      if (page_url_) {
        if (auto v = url::QueryParam(page_url_->query, p.param)) {
          int64_t parsed = 0;
          auto [ptr, ec] = std::from_chars(v->data(), v->data() + v->size(), parsed);
          if (ec == std::errc() && ptr == v->data() + v->size()) current = parsed;
        }
      }
      const int64_t value = current + p.step;
      if (p.max && value > *p.max) return;
      next = url::SetQueryParam(page_.url, p.param, std::to_string(value));
    }
    if (!next || *next == page_.url) return;
    RequestSpec r = MakeRequest(std::move(*next), spec_.name);
    r.pagination_index = page_.pagination_index + 1;
    r.is_pagination = true;
    r.stop_when_no_new_items = p.stop_when_no_new_items;
    out->requests.push_back(std::move(r));
  }

  const CompiledConfig& config_;
  const PageSpec& spec_;
  const Page& page_;
  BodyFormat format_ = BodyFormat::kHtml;
  std::string encoding_;
  std::unique_ptr<MarkupDocument> markup_;
  json json_;
  bool has_json_ = false;
  std::optional<url::Url> page_url_;
  std::optional<std::string> base_url_;
  std::optional<std::string_view> body_text_;
  std::string body_utf8_;
  std::unordered_map<const FieldSpec*, std::vector<json>> body_regex_values_;
};

}  // namespace

ConfigModule::ConfigModule(std::shared_ptr<const CompiledConfig> compiled)
    : compiled_(std::move(compiled)) {}

ConfigModule::~ConfigModule() = default;

const CrawlSettings& ConfigModule::settings() const { return compiled_->settings; }
const std::string& ConfigModule::name() const { return compiled_->name; }

std::vector<std::string> ConfigModule::PageTypes() const {
  std::vector<std::string> out;
  for (const auto& [name, page] : compiled_->pages) out.push_back(name);
  return out;
}

std::vector<RequestSpec> ConfigModule::Generate() const {
  std::vector<RequestSpec> out;
  out.reserve(compiled_->start_urls.size());
  for (const auto& url : compiled_->start_urls) {
    RequestSpec r;
    r.url = url;
    r.method = compiled_->settings.request.method;
    r.body = compiled_->settings.request.body;
    r.page_type = compiled_->start_page;
    out.push_back(std::move(r));
  }
  return out;
}

Result<ParseOutcome> ConfigModule::Parse(const Page& page) const {
  auto it = compiled_->pages.find(page.page_type);
  if (it == compiled_->pages.end()) {
    return Error(ErrorCode::kInvalidArgument, "no page type \"" + page.page_type + "\"", false);
  }
  try {
    return PageParser(*compiled_, it->second, page).Run();
  } catch (const std::bad_alloc&) {
    return Error(ErrorCode::kInternal, "out of memory parsing " + page.url, true);
  } catch (const std::exception& e) {
    return Error(ErrorCode::kProtocol, "cannot parse " + page.url + ": " + e.what(), false);
  }
}

}  // namespace celeriac::extractor::parse
