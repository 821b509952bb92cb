// bench_raw_parse: libxml2's raw HTML parse rate over the generated shop, on one thread.
//
//   bench_raw_parse SITE_DIR [--reps 3] [--json]
//
// Reads every *.html under SITE_DIR into memory first, then times htmlReadMemory + xmlFreeDoc
// over all of them, --reps times, and reports the best pass: pages/s and MB/s. No selectors, no
// I/O, no allocation beyond libxml2's own: the ceiling no libxml2-based extractor (Celeriac's,
// or Scrapy's lxml) can pass on one core. Parse options are the ones an extractor would use on
// untrusted HTML (recover, no network, no error output).
//
// This is the one place outside the extractor's parser that includes <libxml/...>: measuring
// libxml2 bare is the point.

#include <libxml/HTMLparser.h>
#include <libxml/parser.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

namespace {

std::string ReadAll(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: bench_raw_parse SITE_DIR [--reps N] [--json]\n");
    return 2;
  }
  const std::filesystem::path root = argv[1];
  int reps = 3;
  bool json = false;
  for (int i = 2; i < argc; ++i) {
    if (std::strcmp(argv[i], "--reps") == 0 && i + 1 < argc) {
      reps = std::max(1, std::atoi(argv[++i]));
    } else if (std::strcmp(argv[i], "--json") == 0) {
      json = true;
    } else {
      std::fprintf(stderr, "bench_raw_parse: unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  std::vector<std::string> pages;
  std::error_code ec;
  for (auto it = std::filesystem::recursive_directory_iterator(root, ec);
       !ec && it != std::filesystem::recursive_directory_iterator(); it.increment(ec)) {
    if (it->is_regular_file() && it->path().extension() == ".html")
      pages.push_back(ReadAll(it->path()));
  }
  if (ec || pages.empty()) {
    std::fprintf(stderr, "bench_raw_parse: no .html files under %s\n", root.c_str());
    return 1;
  }
  std::sort(pages.begin(), pages.end());  // a fixed order, whatever the directory order
  size_t bytes = 0;
  for (const auto& p : pages) bytes += p.size();

  xmlInitParser();
  const int options = HTML_PARSE_RECOVER | HTML_PARSE_NOERROR | HTML_PARSE_NOWARNING |
                      HTML_PARSE_NONET | HTML_PARSE_COMPACT;
  double best = 1e300;
  size_t failed = 0;
  for (int rep = 0; rep < reps; ++rep) {
    failed = 0;
    const auto start = std::chrono::steady_clock::now();
    for (const auto& p : pages) {
      htmlDocPtr doc = htmlReadMemory(p.data(), static_cast<int>(p.size()), "http://bench/",
                                      "utf-8", options);
      if (doc == nullptr) {
        ++failed;
        continue;
      }
      xmlFreeDoc(doc);
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    best = std::min(best, s);
  }
  xmlCleanupParser();

  const double pages_per_s = static_cast<double>(pages.size()) / best;
  const double mb_per_s = static_cast<double>(bytes) / 1e6 / best;
  if (json) {
    std::printf("{\"pages\": %zu, \"bytes\": %zu, \"seconds\": %.6f, \"pages_per_s\": %.1f, "
                "\"mb_per_s\": %.2f, \"failed\": %zu, \"libxml2\": \"%s\"}\n",
                pages.size(), bytes, best, pages_per_s, mb_per_s, failed, xmlParserVersion);
  } else {
    std::printf("libxml2 %s: %zu pages, %.1f MB, best of %d: %.3f s = %.0f pages/s, %.1f MB/s "
                "(one thread)%s\n",
                xmlParserVersion, pages.size(), static_cast<double>(bytes) / 1e6, reps, best,
                pages_per_s, mb_per_s, failed ? ", some pages failed to parse" : "");
  }
  return failed ? 1 : 0;
}
