// CSS -> XPath: the translation of each supported construct, and what it selects on a real
// document (so a wrong translation fails even when the XPath text looks plausible).

#include <gtest/gtest.h>

#include "extractor/parse/css_xpath.hpp"
#include "extractor/parse/markup.hpp"

namespace celeriac::extractor::parse {
namespace {

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
<div id="other" class="box"><em id="e1"></em></div>
<section id="sec"><h2 id="h">H</h2><p id="q1">q1</p><p id="q2">q2</p><div id="d1"></div><p id="q3">q3</p></section>
</body></html>)";

class CssTest : public ::testing::Test {
 protected:
  void SetUp() override {
    InitMarkup();
    doc_ = MarkupDocument::ParseHtml(kDoc, "UTF-8");
  }

  // ids (or text for text / attribute results) of what `css` selects, space separated.
  std::string Ids(const std::string& css) {
    auto xpath = CssToXPath(css, true);
    if (!xpath.ok()) return "ERROR: " + xpath.error().message();
    auto compiled = CompiledXPath::Compile(*xpath);
    if (!compiled.ok()) return "XPATH ERROR: " + *xpath;
    auto r = doc_->Select(**compiled, doc_->root());
    std::string out;
    for (xmlNodePtr n : r.nodes) {
      std::string v;
      if (n->type == XML_ELEMENT_NODE) {
        v = doc_->NodeAttribute(n, "id").value_or("?" + std::string(reinterpret_cast<const char*>(n->name)));
      } else {
        v = doc_->NodeText(n, TextMode::kRaw);
      }
      out += (out.empty() ? "" : " ") + v;
    }
    return out;
  }

  std::unique_ptr<MarkupDocument> doc_;
};

TEST_F(CssTest, TranslatesBasicSelectors) {
  EXPECT_EQ(*CssToXPath("div", true), "descendant-or-self::div");
  EXPECT_EQ(*CssToXPath("DIV", true), "descendant-or-self::div");
  EXPECT_EQ(*CssToXPath("DIV", false), "descendant-or-self::DIV");
  EXPECT_EQ(*CssToXPath("*", true), "descendant-or-self::*");
  EXPECT_EQ(*CssToXPath("#main", true), "descendant-or-self::*[@id = 'main']");
  EXPECT_EQ(*CssToXPath(".box", true),
            "descendant-or-self::*[@class and contains(concat(' ', normalize-space(@class), ' '), ' box ')]");
  EXPECT_EQ(*CssToXPath("div > p", true), "descendant-or-self::div/p");
  EXPECT_EQ(*CssToXPath("div p", true), "descendant-or-self::div/descendant::p");
  EXPECT_EQ(*CssToXPath("h2 + p", true), "descendant-or-self::h2/following-sibling::*[1]/self::p");
  EXPECT_EQ(*CssToXPath("h2 ~ p", true), "descendant-or-self::h2/following-sibling::p");
  EXPECT_EQ(*CssToXPath("a, b", true), "descendant-or-self::a | descendant-or-self::b");
  EXPECT_EQ(*CssToXPath("a::attr(href)", true), "descendant-or-self::a/@href");
  EXPECT_EQ(*CssToXPath("p::text", true), "descendant-or-self::p/text()");
  EXPECT_EQ(*CssToXPath("[title=\"it's\"]", true), "descendant-or-self::*[@title = \"it's\"]");
  EXPECT_EQ(XPathLiteral("a'b\"c"), "concat('a', \"'\", 'b\"c')");
}

TEST_F(CssTest, SelectsTypeIdClassAndUniversal) {
  EXPECT_EQ(Ids("p"), "p1 p2 p3 q1 q2 q3");
  EXPECT_EQ(Ids("#p2"), "p2");
  EXPECT_EQ(Ids(".box"), "main other");
  EXPECT_EQ(Ids(".box.wide"), "main");
  EXPECT_EQ(Ids("div.box#other"), "other");
  EXPECT_EQ(Ids(".intro"), "p1");
  EXPECT_EQ(Ids(".int"), "");  // whole class names only
  EXPECT_EQ(Ids("#other *"), "e1");
  EXPECT_EQ(Ids("P#P1"), "");  // ids are case-sensitive, element names are not
  EXPECT_EQ(Ids("P#p1"), "p1");
}

TEST_F(CssTest, SelectsAttributes) {
  EXPECT_EQ(Ids("a[href]"), "a1 a2");
  EXPECT_EQ(Ids("a[href='/x.pdf']"), "a1");
  EXPECT_EQ(Ids("a[href=\"/x.pdf\"]"), "a1");
  EXPECT_EQ(Ids("[id=l3]"), "l3");
  EXPECT_EQ(Ids("[class~=first]"), "p1");
  EXPECT_EQ(Ids("[class~=box]"), "main other");
  EXPECT_EQ(Ids("[lang|=en]"), "p2");
  EXPECT_EQ(Ids("[data-x|=a]"), "main");
  EXPECT_EQ(Ids("a[href^=https]"), "a2");
  EXPECT_EQ(Ids("a[href$='.pdf']"), "a1");
  EXPECT_EQ(Ids("a[href*='e.c']"), "a2");
  EXPECT_EQ(Ids("a[href^='']"), "");
  EXPECT_EQ(Ids("p[title=\"it's \\\"q\\\"\"]"), "p3");
  EXPECT_EQ(Ids("a[ HREF = '/x.pdf' ]"), "a1");
}

TEST_F(CssTest, SelectsCombinators) {
  EXPECT_EQ(Ids("#main > p"), "p1 p2 p3");
  EXPECT_EQ(Ids("#main b"), "b1");
  EXPECT_EQ(Ids("#main > b"), "");
  EXPECT_EQ(Ids("h2 + p"), "q1");
  EXPECT_EQ(Ids("h2 ~ p"), "q1 q2 q3");
  EXPECT_EQ(Ids("#d1 + p"), "q3");
  EXPECT_EQ(Ids("#q2 + p"), "");  // the next sibling is a div
  EXPECT_EQ(Ids("#main>ul>li:first-child"), "l1");
  EXPECT_EQ(Ids("#sec p, #other em"), "e1 q1 q2 q3");  // document order
  EXPECT_EQ(Ids("body  section\n p"), "q1 q2 q3");
}

TEST_F(CssTest, SelectsStructuralPseudoClasses) {
  EXPECT_EQ(Ids("li:first-child"), "l1");
  EXPECT_EQ(Ids("li:last-child"), "l5");
  EXPECT_EQ(Ids("li:nth-child(2)"), "l2");
  EXPECT_EQ(Ids("li:nth-child(odd)"), "l1 l3 l5");
  EXPECT_EQ(Ids("li:nth-child(even)"), "l2 l4");
  EXPECT_EQ(Ids("li:nth-child(2n+1)"), "l1 l3 l5");
  EXPECT_EQ(Ids("li:nth-child(3n)"), "l3");
  EXPECT_EQ(Ids("li:nth-child(n+3)"), "l3 l4 l5");
  EXPECT_EQ(Ids("li:nth-child(-n+2)"), "l1 l2");
  EXPECT_EQ(Ids("li:nth-child( 2n - 1 )"), "l1 l3 l5");
  EXPECT_EQ(Ids("li:nth-last-child(1)"), "l5");
  EXPECT_EQ(Ids("li:nth-last-child(-n+2)"), "l4 l5");
  EXPECT_EQ(Ids("#sec p:first-of-type"), "q1");
  EXPECT_EQ(Ids("#sec p:last-of-type"), "q3");
  EXPECT_EQ(Ids("#sec p:nth-of-type(2)"), "q2");
  EXPECT_EQ(Ids("#sec p:nth-last-of-type(1)"), "q3");
  EXPECT_EQ(Ids("#sec h2:only-of-type"), "h");
  EXPECT_EQ(Ids("#other em:only-child"), "e1");
  EXPECT_EQ(Ids("span:empty, em:empty, div:empty"), "s1 e1 d1");
  EXPECT_EQ(Ids("li:not(.odd):not(#l5)"), "l1 l3 l4");
  EXPECT_EQ(Ids("#main > :not(p):not(a)"), "s1 list");
  EXPECT_EQ(Ids("p:contains('Thr')"), "p3");
  EXPECT_EQ(Ids("html:root"), "?html");
}

TEST_F(CssTest, SelectsPseudoElements) {
  EXPECT_EQ(Ids("#p1::text"), "One   tail");  // "One " and " tail"
  EXPECT_EQ(Ids("#p2::text"), "Two");
  EXPECT_EQ(Ids("#main > a::attr(href)"), "/x.pdf https://e.com/y");
  EXPECT_EQ(Ids("a::attr(\"href\")"), "/x.pdf https://e.com/y");
}

TEST_F(CssTest, RejectsUnsupportedSyntaxNamingTheSelector) {
  for (const char* bad : {"", "div >", "a:hover", "ns|a", "[a=b i]", "a::before", "p::text b",
                          "*:first-of-type", ":nth-child(x)", "div[", "a,", "a)", "#", ".",
                          "[title='x]", "li:nth-child(2", ":not(a b)"}) {
    auto r = CssToXPath(bad, true);
    EXPECT_FALSE(r.ok()) << bad << " -> " << (r.ok() ? *r : "");
    if (!r.ok() && std::string(bad) != "") {
      EXPECT_NE(r.error().message().find(std::string("\"") + bad + "\""), std::string::npos)
          << r.error().message();
    }
  }
}

TEST_F(CssTest, ContainerRelativeSelection) {
  auto main_sel = CompiledXPath::Compile(*CssToXPath("#sec", true));
  ASSERT_TRUE(main_sel.ok());
  auto sec = doc_->Select(**main_sel, doc_->root());
  ASSERT_EQ(sec.nodes.size(), 1u);
  auto p = CompiledXPath::Compile(*CssToXPath("p", true));
  auto r = doc_->Select(**p, sec.nodes[0]);
  ASSERT_EQ(r.nodes.size(), 3u);  // only the section's paragraphs
  EXPECT_EQ(doc_->NodeText(r.nodes[0], TextMode::kNormalized), "q1");
}

}  // namespace
}  // namespace celeriac::extractor::parse
