// CssMatcher: native CSS matching gives exactly the nodes, in the same order, that the
// selector's XPath gives (the reference), on fixed pages and on random documents with random
// selectors, from the document and from element contexts; limits and the attribute filter cut
// that same list; and hostile nesting makes it hand over to the XPath instead of backtracking
// for ever.

#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "extractor/parse/css_match.hpp"
#include "extractor/parse/css_xpath.hpp"
#include "extractor/parse/markup.hpp"
#include "tests/support/paths.hpp"

namespace celeriac::extractor::parse {
namespace {

struct Compiled {
  std::shared_ptr<const CompiledXPath> xpath;
  std::shared_ptr<const CssMatcher> css;
};

Compiled Compile(const std::string& selector, bool html) {
  auto parsed = ParseCss(selector, html);
  EXPECT_TRUE(parsed.ok()) << selector << ": " << parsed.error().message();
  if (!parsed.ok()) return {};
  auto xpath = CompiledXPath::Compile(ToXPath(*parsed));
  EXPECT_TRUE(xpath.ok()) << selector << ": " << ToXPath(*parsed);
  if (!xpath.ok()) return {};
  return {*xpath, CssMatcher::Create(std::move(*parsed))};
}

std::string Describe(const std::vector<xmlNodePtr>& nodes) {
  std::string out;
  for (xmlNodePtr n : nodes) {
    out += out.empty() ? "" : " ";
    if (n->type == XML_ELEMENT_NODE || n->type == XML_ATTRIBUTE_NODE) {
      out += reinterpret_cast<const char*>(n->name);
    } else {
      out += "#text";
    }
    out += "@" + std::to_string(xmlGetLineNo(n->type == XML_ATTRIBUTE_NODE ? n->parent : n));
  }
  return out;
}

// Checks native == XPath for `selector` from `context`; returns false when native declined.
bool Same(const MarkupDocument& doc, const Compiled& c, xmlNodePtr context,
          const std::string& selector) {
  std::vector<xmlNodePtr> native;
  if (!c.css->Select(context, SIZE_MAX, nullptr, &native)) {
    EXPECT_TRUE(native.empty());
    return false;
  }
  const auto reference = doc.Select(*c.xpath, context).nodes;
  EXPECT_EQ(native, reference) << "selector: " << selector << "\nxpath: " << c.xpath->text()
                               << "\nnative:    " << Describe(native)
                               << "\nreference: " << Describe(reference);
  // A limit cuts the same list.
  std::vector<xmlNodePtr> first;
  EXPECT_TRUE(c.css->Select(context, 1, nullptr, &first));
  EXPECT_EQ(first.size(), std::min<size_t>(1, reference.size())) << selector;
  if (!first.empty()) {
    EXPECT_EQ(first.front(), reference.front()) << selector;
  }
  // The attribute filter keeps the XPath's elements that have it (others pass as they are).
  std::vector<xmlNodePtr> with_id;
  EXPECT_TRUE(c.css->Select(context, SIZE_MAX, "id", &with_id));
  std::vector<xmlNodePtr> expected;
  for (xmlNodePtr n : reference) {
    if (n->type != XML_ELEMENT_NODE || doc.NodeAttribute(n, "id")) expected.push_back(n);
  }
  EXPECT_EQ(with_id, expected) << selector;
  return true;
}

constexpr char kDoc[] = R"(<!DOCTYPE html>
<html><head><title>T</title></head><body>
<div id="main" class="box  wide" data-x="a-b">
  <p id="p1" class="intro first">One <b id="b1">bold</b> tail</p>
  <p id="p2" lang="en-US">Two</p>
  <span id="s1"></span>
  <p id="p3" title="it's &quot;q&quot;">Three</p>
  <ul id="list">
    <li id="l1">a</li><li id="l2" class="odd">b</li><li id="l3">c</li><li id="l4">d</li><li id="l5">e</li>
  </ul>
  <a id="a1" href="/x.pdf">pdf</a><a id="a2" href="https://e.com/y">ext</a><a id="a3">none</a>
</div>
<div id="other" class="box"><em id="e1"></em><p data-v="caf&eacute;">x<!-- c -->y</p></div>
<section id="sec"><h2 id="h">H</h2><p id="q1">q1</p><p id="q2">q2</p><div id="d1"></div><p id="q3">q3</p></section>
</body></html>)";

const char* kSelectors[] = {
    "p", "div p", "div > p", "#main p", ".box", ".box.wide", "div.box#other", "*", "#other *",
    "li:first-child", "li:last-child", "li:nth-child(2n+1)", "li:nth-child(-n+2)",
    "li:nth-last-child(2)", "p:first-of-type", "p:last-of-type", "p:nth-of-type(2)",
    "em:only-child", "span:empty", "em:empty", "html:root", "p:not(.intro)", "*:not(*)",
    "p:contains('Tw')", "[href]", "[href$=pdf]", "[href^=https]", "[href*='e.com']",
    "[lang|=en]", "[data-x~=a-b]", "[data-x!=a-b]", "[data-v$='é']", "[data-v^='caf']",
    "[class~='']", "h2 + p", "h2 ~ p", "p + p", "div ~ p", "p::text", "div::text",
    "a::attr(href)", "p::attr(id)", "p, li", "li, p", "#l3, #l1", "a::attr(href), p::attr(id)",
    "p::text, b::text", "div p b", "body div p", "div div", "section > *:nth-child(odd)",
    ".intro, .odd, #a2", "ul li + li", "div > ul > li.odd ~ li"};

TEST(CssMatchTest, SameNodesAsTheXPathOnAFixedPage) {
  InitMarkup();
  auto doc = MarkupDocument::ParseHtml(kDoc, "UTF-8");
  for (const char* selector : kSelectors) {
    const Compiled c = Compile(selector, true);
    ASSERT_NE(c.css, nullptr) << selector;
    EXPECT_TRUE(Same(*doc, c, doc->root(), selector)) << selector;
    // From every element as the context (a container's fields), where native decides.
    for (xmlNodePtr n = xmlDocGetRootElement(reinterpret_cast<xmlDocPtr>(doc->root())); n != nullptr;) {
      Same(*doc, c, n, selector);
      if (n->children != nullptr) {
        n = n->children;
        continue;
      }
      while (n != nullptr && n->next == nullptr) n = n->parent;
      if (n != nullptr) n = n->next;
      if (n != nullptr && n->type == XML_DOCUMENT_NODE) break;
    }
  }
}

TEST(CssMatchTest, SameNodesAsTheXPathOnRealPages) {
  InitMarkup();
  const char* selectors[] = {"article.product_pod h3 a", "li.next a[rel=next]",
                             "div.product_main h1", "table td", "a::attr(href)",
                             "ul.breadcrumb li:nth-child(2) a", "p::text", "img", "[class]",
                             "div > p, ul > li", "*"};
  for (const char* page : {"listing.html", "product.html", "broken.html", "latin1.html"}) {
    const std::string body = testing::ReadFile(testing::SourceDir() / "tests" / "data" / "pages" / page);
    auto doc = MarkupDocument::ParseHtml(body, ChooseHtmlEncoding("text/html", body));
    for (const char* selector : selectors) {
      const Compiled c = Compile(selector, true);
      EXPECT_TRUE(Same(*doc, c, doc->root(), selector)) << page << " " << selector;
    }
  }
}

// Random documents and random selectors over a small vocabulary, so that matches are common.
class RandomCss {
 public:
  explicit RandomCss(unsigned seed) : rng_(seed) {}

  std::string Document(bool xml) {
    std::string out = xml ? "<root xmlns:q='urn:q'>" : "<html><body>";
    const int n = Pick(3, 8);
    for (int i = 0; i < n; ++i) Element(&out, 0, xml);
    out += xml ? "</root>" : "</body></html>";
    return out;
  }

  std::string Selector() {
    std::string out;
    const int alternatives = Pick(1, 3) == 3 ? 2 : 1;
    const int pseudo = Pick(0, 5);  // the same ending for all alternatives, mostly
    for (int a = 0; a < alternatives; ++a) {
      if (a > 0) out += ", ";
      const int compounds = Pick(1, 3);
      for (int i = 0; i < compounds; ++i) {
        if (i > 0) out += kCombinators[Pick(0, 4)];
        out += Compound();
      }
      if (pseudo == 4) out += "::text";
      if (pseudo == 5) out += Pick(0, 1) ? "::attr(class)" : "::attr(id)";
    }
    return out;
  }

 private:
  static constexpr const char* kTags[] = {"div", "p", "li", "a", "span"};
  static constexpr const char* kCombinators[] = {" ", " > ", " + ", " ~ ", " "};

  int Pick(int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng_); }

  void Element(std::string* out, int depth, bool xml) {
    const std::string tag = kTags[Pick(0, 4)];
    const std::string name = xml && Pick(0, 6) == 0 ? "q:" + tag : (xml && Pick(0, 5) == 0 ? "DIV" : tag);
    *out += "<" + name;
    if (Pick(0, 2) == 0) *out += " id='i" + std::to_string(Pick(0, 4)) + "'";
    if (Pick(0, 1) == 0) {
      const char* classes[] = {"a", "b", "a b", " a\tb\n", "ab", "b-c", "c\xC3\xA9"};
      *out += std::string(" class='") + classes[Pick(0, 6)] + "'";
    }
    if (Pick(0, 3) == 0) *out += " data-x='" + std::string(Pick(0, 1) ? "x-y" : "y") + "'";
    *out += ">";
    const int children = depth > 4 ? 0 : Pick(0, 4);
    for (int i = 0; i < children; ++i) {
      switch (Pick(0, 3)) {
        case 0: *out += Pick(0, 1) ? "t" : " "; break;
        case 1: *out += Pick(0, 3) ? "x" : "<!--c-->"; break;
        default: Element(out, depth + 1, xml); break;
      }
    }
    *out += "</" + name + ">";
  }

  std::string Compound() {
    std::string out;
    switch (Pick(0, 3)) {
      case 0: out = "*"; break;
      case 1: break;
      default: out = kTags[Pick(0, 4)]; break;
    }
    const char* conditions[] = {".a", ".b", "#i1", "[data-x]", "[data-x|=x]", "[data-x$=y]",
                                ":first-child", ":last-child", ":nth-child(2n)", ":empty",
                                ":not(.a)", "[class~=b]", "[class*=b]", ":nth-last-child(odd)",
                                ":contains(t)", ".c\xC3\xA9", "[class^=a]"};
    const int n = out.empty() ? Pick(1, 2) : Pick(0, 2);
    for (int i = 0; i < n; ++i) out += conditions[Pick(0, 16)];
    if (!out.empty() && out.front() != '*' && out.front() != '.' && out.front() != '#' &&
        out.front() != '[' && out.front() != ':' && Pick(0, 4) == 0) {
      out += ":first-of-type";
    }
    return out;
  }

  std::mt19937 rng_;
};

TEST(CssMatchTest, SameNodesAsTheXPathOnRandomDocumentsAndSelectors) {
  InitMarkup();
  RandomCss random(20261122);
  size_t compared = 0, nonempty = 0, declined = 0;
  for (int d = 0; d < 60; ++d) {
    const bool xml = d % 4 == 3;
    const std::string body = random.Document(xml);
    auto doc = xml ? MarkupDocument::ParseXml(body) : MarkupDocument::ParseHtml(body, "UTF-8");
    std::vector<xmlNodePtr> elements;
    for (xmlNodePtr n = xmlDocGetRootElement(reinterpret_cast<xmlDocPtr>(doc->root())); n != nullptr;) {
      if (n->type == XML_ELEMENT_NODE) elements.push_back(n);
      if (n->type == XML_ELEMENT_NODE && n->children != nullptr) {
        n = n->children;
        continue;
      }
      while (n != nullptr && n->next == nullptr) n = n->parent;
      if (n != nullptr) n = n->next;
    }
    for (int s = 0; s < 40; ++s) {
      const std::string selector = random.Selector();
      const Compiled c = Compile(selector, !xml);
      if (c.css == nullptr) continue;  // mixed endings: the XPath serves them
      if (!Same(*doc, c, doc->root(), selector)) ++declined;
      ++compared;
      nonempty += !doc->Select(*c.xpath, doc->root()).nodes.empty();
      for (int k = 0; k < 3 && !elements.empty(); ++k) {
        Same(*doc, c, elements[static_cast<size_t>(s * 7 + k * 13) % elements.size()], selector);
      }
      if (HasFailure()) return;
    }
  }
  EXPECT_GT(compared, 2000u);
  EXPECT_GT(nonempty, compared / 4) << "the random selectors should often select something";
  EXPECT_EQ(declined, 0u) << "from the document node native always decides on small pages";
}

TEST(CssMatchTest, MixedEndingsAreLeftToTheXPath) {
  auto parsed = ParseCss("a, a::attr(href)", true);
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(CssMatcher::Create(std::move(*parsed)), nullptr);
}

TEST(CssMatchTest, SiblingCombinatorsFromAnElementAreLeftToTheXPath) {
  InitMarkup();
  auto doc = MarkupDocument::ParseHtml(kDoc, "UTF-8");
  const Compiled c = Compile("h2 + p", true);
  auto section = doc->Select(*CompiledXPath::Compile("//section").value(), doc->root()).nodes;
  ASSERT_EQ(section.size(), 1u);
  std::vector<xmlNodePtr> out;
  EXPECT_FALSE(c.css->Select(section.front(), SIZE_MAX, nullptr, &out));
  EXPECT_TRUE(c.css->Select(doc->root(), SIZE_MAX, nullptr, &out));
  EXPECT_EQ(out.size(), 1u);
}

TEST(CssMatchTest, PathologicalBacktrackingHandsOverToTheXPath) {
  InitMarkup();
  // 200 nested divs with 2,000 spans at the bottom: "p div div div span" backtracks through
  // C(200, 3) choices of ancestors for each span before it fails, so native gives up.
  std::string body = "<html><body>";
  for (int i = 0; i < 200; ++i) body += "<div>";
  for (int i = 0; i < 2000; ++i) body += "<span></span>";
  for (int i = 0; i < 200; ++i) body += "</div>";
  body += "</body></html>";
  auto doc = MarkupDocument::ParseHtml(body, "UTF-8");
  const Compiled c = Compile("p div div div span", true);
  std::vector<xmlNodePtr> out;
  EXPECT_FALSE(c.css->Select(doc->root(), SIZE_MAX, nullptr, &out));
  EXPECT_TRUE(out.empty());
  EXPECT_TRUE(doc->Select(*c.xpath, doc->root()).nodes.empty());
  // While a selector that matches is found at once.
  const Compiled d = Compile("div div div div span", true);
  EXPECT_TRUE(d.css->Select(doc->root(), SIZE_MAX, nullptr, &out));
  EXPECT_EQ(out.size(), 2000u);
}

}  // namespace
}  // namespace celeriac::extractor::parse
