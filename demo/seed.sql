-- Demo rows for `./dev demo`: data sources, crawl tasks, and crawl configs in every status the
-- orchestrator must handle (an active config, an older inactive version, a draft, and a source
-- with no active config at all, which execute_crawl_task skips with a warning).
-- Safe to load twice: fixed ids, ON CONFLICT DO NOTHING. The demo site (build/bin/demo-site,
-- demo/site/demo_site.cpp) runs on 127.0.0.1:18081, so its configs allow private network
-- addresses explicitly. A full crawl of config 2 yields 46 items (DEMO-001..DEMO-050 but for a
-- page without its sku, a permanent 500, a dead link and a page robots.txt forbids); config 4
-- yields 24 (CLR-001..CLR-024). `demo-site --print-expected 2|4` prints them.

INSERT INTO data_sources (id, name, base_url) VALUES
  (1, 'Demo shop', 'http://127.0.0.1:18081/'),
  (2, 'Demo shop (clearance)', 'http://127.0.0.1:18081/clearance/'),
  (3, 'Retired catalogue', 'http://127.0.0.1:18081/retired/')
ON CONFLICT (id) DO NOTHING;

INSERT INTO crawl_configs (id, data_source_id, version, status, config) VALUES
  (1, 1, 1, 'inactive', '{
     "name": "Demo shop v1 (listing only)",
     "start_urls": ["http://127.0.0.1:18081/products?page=1"],
     "start_page": "listing",
     "allow_private_network": true,
     "pages": {
       "listing": {
         "item": {
           "key": ["url"],
           "container": {"css": "article.product"},
           "fields": {
             "url": {"css": "h2 a", "attr": "href", "required": true, "pipeline": [{"urljoin": true}]},
             "name": {"css": "h2 a", "text": "normalized", "required": true}
           }
         },
         "pagination": {"next": {"css": "a[rel=next]", "attr": "href"}, "max_pages": 50}
       }
     }
   }'),
  (2, 1, 2, 'active', '{
     "name": "Demo shop v2 (listing and product pages)",
     "start_urls": ["http://127.0.0.1:18081/products?page=1"],
     "start_page": "listing",
     "allow_private_network": true,
     "politeness": {"robots_txt": true, "per_host_concurrency": 8, "min_delay_ms": 0},
     "retry": {"max_retries": 2, "backoff_base_ms": 200, "backoff_max_ms": 2000},
     "errors": {"module_pause_after": 5, "module_cooldown_ms": 5000, "run_abort_after": 10},
     "limits": {"max_pages": 500, "max_depth": 5},
     "pages": {
       "listing": {
         "links": [{"css": "article.product h2 a", "scope": "same-host", "route_to": "product"}],
         "pagination": {"next": {"css": "a[rel=next]", "attr": "href"}, "max_pages": 50}
       },
       "product": {
         "item": {
           "key": ["sku"],
           "fields": {
             "sku": {"css": "[itemprop=sku]", "required": true, "pipeline": [{"trim": true}]},
             "name": {"css": "h1", "text": "normalized", "required": true},
             "price": {"css": "[itemprop=price]", "attr": "content", "pipeline": [{"cast": "decimal"}]},
             "in_stock": {"css": ".availability", "vary": true, "pipeline": [{"lower": true}, {"map": {"in stock": true, "sold out": false}}]},
             "tags": {"css": "ul.tags li", "multiple": true, "pipeline": [{"trim": true}]},
             "url": {"url": "full"}
           }
         }
       }
     }
   }'),
  (3, 1, 3, 'draft', '{
     "name": "Demo shop v3 (draft: also reviews)",
     "start_urls": ["http://127.0.0.1:18081/products?page=1"],
     "start_page": "listing",
     "allow_private_network": true,
     "pages": {"listing": {"links": [{"css": "article.product h2 a", "route_to": "listing"}]}}
   }'),
  (4, 2, 1, 'active', '{
     "name": "Clearance listing",
     "start_urls": ["http://127.0.0.1:18081/clearance/?page=1"],
     "start_page": "listing",
     "allow_private_network": true,
     "pages": {
       "listing": {
         "item": {
           "key": ["sku"],
           "container": {"css": "article.product"},
           "fields": {
             "sku": {"css": "[itemprop=sku]", "required": true},
             "name": {"css": "h2", "text": "normalized"},
             "price": {"css": "[itemprop=price]", "attr": "content", "pipeline": [{"cast": "decimal"}]}
           }
         },
         "pagination": {"param": "page", "start": 1, "step": 1, "max": 10, "stop_when_no_new_items": true}
       }
     }
   }'),
  (5, 3, 1, 'inactive', '{
     "name": "Retired catalogue",
     "start_urls": ["http://127.0.0.1:18081/retired/"],
     "start_page": "listing",
     "allow_private_network": true,
     "pages": {"listing": {}}
   }')
ON CONFLICT (id) DO NOTHING;

INSERT INTO crawl_tasks (id, name, data_source_ids, schedule, timezone, enabled) VALUES
  (1, 'Demo shop, hourly', '{1}', '@hourly', 'UTC', true),
  (2, 'Every demo source, nightly in Berlin', '{1,2,3}', '30 2 * * *', 'Europe/Berlin', true),
  (3, 'Demo shop, on demand only', '{1,2}', NULL, 'UTC', true),
  (4, 'Paused weekly crawl', '{2}', '0 6 * * mon', 'America/New_York', false)
ON CONFLICT (id) DO NOTHING;

-- Later inserts without explicit ids must not collide with the demo rows.
SELECT setval(pg_get_serial_sequence('data_sources', 'id'), (SELECT max(id) FROM data_sources));
SELECT setval(pg_get_serial_sequence('crawl_configs', 'id'), (SELECT max(id) FROM crawl_configs));
SELECT setval(pg_get_serial_sequence('crawl_tasks', 'id'), (SELECT max(id) FROM crawl_tasks));
