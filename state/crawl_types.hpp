#pragma once
// What a crawl's frontier and item store hold: requests to fetch and items extracted. The
// extractor's modules produce them (extractor/module/module.hpp); the crawl store keeps them
// (state/crawl_store.hpp).

#include <string>

#include <nlohmann/json.hpp>

namespace celeriac::state {

// One request the pipeline should make. Its fingerprint (canonical URL + method + body)
// dedups it within a run.
struct RequestSpec {
  std::string url;                // absolute http(s) URL
  std::string method = "GET";     // GET | POST
  std::string body;               // POST body, as sent
  std::string page_type;          // step whose Parse handles the response
  int depth = 0;                  // link hops from a start URL; pagination keeps the depth
  int pagination_index = 0;       // pages followed by pagination from the first page (0 = first)
  bool is_pagination = false;     // found by the pagination rule
  bool stop_when_no_new_items = false;  // pagination only: follow it only if the page it was
                                        // found on brought an item or a link new to the run
};

// One extracted item.
struct Item {
  std::string key;                // canonical text of the key values (JSON array text); non-empty
  nlohmann::json data;            // field name -> value
  std::string content_hash;       // hex digest over data without the `vary` fields
};

}  // namespace celeriac::state
