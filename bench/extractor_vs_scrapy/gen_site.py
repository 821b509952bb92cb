#!/usr/bin/python3
"""Generate the benchmark's static shop: 200 listing pages and 5,000 product pages of ~15 KB.

    /usr/bin/python3 bench/extractor_vs_scrapy/gen_site.py OUT_DIR [--seed 6]

Deterministic: the same seed writes the same bytes. Writes
    OUT_DIR/site/catalogue/page-N.html    N = 1..200, 25 `article.product_pod h3 a` links each
                                          and `li.next a[rel=next]` (relative href) but the last
    OUT_DIR/site/product/<slug>.html      one product each, header/nav/footer boilerplate,
                                          description paragraphs, a specs table, related links,
                                          reviews; ~15 KB
    OUT_DIR/site/index.html, robots.txt   (robots.txt disallows nothing: both crawlers run
                                          with robots off anyway)
    OUT_DIR/expected.jsonl                the 5,000 items, sorted by sku, normalized as
                                          normalize_item() below does to every crawler's output
    OUT_DIR/product_paths.txt             every product path, for wrk
The fields and the selectors both crawlers use (scrapy_shop.py, celeriac_config.json):
    sku           table.specs td.sku                               text, trimmed
    name          div.product_main h1                              text, whitespace collapsed
    price         div.product_main [itemprop=price]                @content, a decimal
    currency      div.product_main meta[itemprop=priceCurrency]    @content
    availability  div.product_main p.availability                  text, whitespace collapsed
    category      ul.breadcrumb a.category                         text, whitespace collapsed
    rating        div.product_main p.star-rating                   @data-rating, an int
    description   div#product_description p                        first match, text collapsed
    tags          ul.tags li                                       every match, trimmed
    image         div.product_main img.main                        @src, made absolute
"""
import argparse
import decimal
import html
import json
import os
import random
import urllib.parse

LISTING_PAGES = 200
PER_PAGE = 25
PRODUCTS = LISTING_PAGES * PER_PAGE

CATEGORIES = ["Kitchen", "Garden", "Pantry", "Tableware", "Tools", "Outdoor", "Storage",
              "Textiles", "Lighting", "Bath", "Office", "Kids", "Pets", "Travel", "Workshop",
              "Crafts", "Music", "Books", "Sports", "Wellness", "Seeds", "Baking",
              "Coffee & Tea", "Cellar"]
ADJECTIVES = ["Crisp", "Rustic", "Golden", "Hardy", "Smoky", "Bright", "Tender", "Sturdy",
              "Wild", "Velvet", "Nordic", "Copper", "Linen", "Oak", "Stoneware", "Enamel",
              "Bamboo", "Cast-iron", "Folding", "Compact", "Classic", "Modern", "Vintage",
              "Alpine", "Coastal", "Urban", "Heritage", "Pocket", "Grand", "Little"]
NOUNS = ["Peeler", "Brush", "Pot", "Trowel", "Tray", "Scissors", "Masher", "Bowl", "Bin",
         "Mill", "Board", "Can", "Apron", "Colander", "Roll", "Jar", "Grater", "Label", "Rack",
         "Towel", "Ladle", "Mandoline", "Saw", "Crock", "Kettle", "Lantern", "Basket", "Stool",
         "Whisk", "Skillet", "Teapot", "Planter", "Hook", "Crate", "Blanket", "Candle", "Mug",
         "Spoon", "Sieve", "Press"]
WORDS = ("made from responsibly sourced materials and finished by hand in a small workshop "
         "that has been making everyday things for more than forty years each piece is "
         "tested before it leaves and comes with a two year guarantee the design is simple "
         "honest and built to be repaired rather than replaced it works well with the rest "
         "of the range and looks at home in a busy kitchen garden shed or studio clean with "
         "warm water and mild soap dry thoroughly and store somewhere airy customers love "
         "how it feels in the hand and how long it lasts").split()
TAGS = ["eco", "gift", "bestseller", "new", "handmade", "sale", "limited", "classic",
        "steel", "wood", "ceramic", "cotton", "outdoor", "kitchen", "compact", "premium"]
RATINGS = ["Zero", "One", "Two", "Three", "Four", "Five"]


def sentence(rng, n):
    words = [rng.choice(WORDS) for _ in range(n)]
    return " ".join(words).capitalize() + "."


def paragraph(rng, sentences):
    return " ".join(sentence(rng, rng.randint(8, 18)) for _ in range(sentences))


def header(title):
    nav = "\n".join('      <li><a href="/category/%s.html">%s</a></li>'
                    % (urllib.parse.quote(c.lower().replace(" ", "-")), html.escape(c))
                    for c in CATEGORIES)
    return """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>%s | Celeriac bench shop</title>
  <link rel="stylesheet" href="/static/css/shop.css">
  <link rel="icon" href="/static/favicon.ico">
  <script>window.dataLayer = window.dataLayer || []; function gtag(){dataLayer.push(arguments);}
  gtag('js', new Date()); gtag('config', 'BENCH-0000'); if (1 < 2 && 3 > 2) { /* not markup */ }</script>
</head>
<body class="default">
  <header class="header container-fluid">
    <div class="page_inner"><div class="row">
      <div class="col-sm-8 h1"><a href="/index.html">Celeriac bench shop</a></div>
      <form class="search" action="/search" method="get"><input type="search" name="q"
        placeholder="Search the shop"><button type="submit">Search</button></form>
    </div></div>
    <nav class="categories"><ul>
%s
    </ul></nav>
  </header>
""" % (html.escape(title), nav)


FOOTER = """  <footer class="footer container-fluid">
    <div class="row">
      <section class="col"><h4>Customer service</h4><ul>
        <li><a href="/help/contact.html">Contact us</a></li><li><a href="/help/delivery.html">Delivery</a></li>
        <li><a href="/help/returns.html">Returns &amp; refunds</a></li><li><a href="/help/faq.html">FAQ</a></li>
        <li><a href="/help/size-guide.html">Size guide</a></li><li><a href="/help/gift-cards.html">Gift cards</a></li>
      </ul></section>
      <section class="col"><h4>About</h4><ul>
        <li><a href="/about/story.html">Our story</a></li><li><a href="/about/makers.html">Our makers</a></li>
        <li><a href="/about/sustainability.html">Sustainability</a></li><li><a href="/about/jobs.html">Jobs</a></li>
        <li><a href="/about/press.html">Press</a></li><li><a href="/about/stores.html">Stores</a></li>
      </ul></section>
      <section class="col newsletter"><h4>Newsletter</h4>
        <p>New arrivals, seasonal recipes and the odd discount, once a month. No spam, ever.</p>
        <form action="/newsletter" method="post"><input type="email" name="email"
          placeholder="you@example.com"><button type="submit">Subscribe</button></form>
      </section>
    </div>
    <p class="legal">&copy; 2026 Celeriac bench shop. A generated site for benchmarks; nothing here
      is for sale. <a href="/legal/terms.html">Terms</a> &middot; <a href="/legal/privacy.html">Privacy</a>
      &middot; <a href="/legal/cookies.html">Cookies</a> &middot; <a href="/legal/imprint.html">Imprint</a></p>
  </footer>
  <script src="/static/js/jquery.min.js"></script>
  <script src="/static/js/shop.js"></script>
</body>
</html>
"""


def make_products(rng):
    products, slugs = [], set()
    for i in range(PRODUCTS):
        while True:
            name = "%s %s %s" % (rng.choice(ADJECTIVES), rng.choice(ADJECTIVES[:10]),
                                 rng.choice(NOUNS))
            slug = name.lower().replace(" ", "-") + "-%d" % (i + 1)
            if slug not in slugs:
                break
        slugs.add(slug)
        cents = rng.randint(199, 49999)
        products.append({
            "index": i,
            "slug": slug,
            "sku": "BS-%05d-%s" % (i + 1, "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZ")
                                                   for _ in range(3))),
            "name": name,
            "price": "%d.%02d" % (cents // 100, cents % 100),
            "currency": rng.choice(["EUR", "EUR", "EUR", "GBP", "USD"]),
            "in_stock": rng.random() < 0.8,
            "category": rng.choice(CATEGORIES),
            "rating": rng.randint(1, 5),
            "tags": rng.sample(TAGS, rng.randint(1, 5)),
            "paragraphs": [paragraph(rng, rng.randint(3, 5)) for _ in range(rng.randint(4, 6))],
            "reviews": [(rng.choice(["Anna", "Ben", "Chidi", "Dana", "Émile", "Farah", "Gus"]),
                         rng.randint(1, 5), paragraph(rng, rng.randint(2, 4)))
                        for _ in range(rng.randint(5, 9))],
            "specs": [(k, "%s %d" % (rng.choice(WORDS), rng.randint(1, 999)))
                      for k in rng.sample(["Weight", "Width", "Height", "Depth", "Material",
                                           "Finish", "Origin", "Care", "Warranty", "Colour",
                                           "Capacity", "Volume", "Model", "Batch"], 14)],
        })
    for p in products:
        p["related"] = [rng.randrange(PRODUCTS) for _ in range(12)]
    return products


def description_html(text, rng):
    # Some inline markup and entities inside the paragraph, so "text, whitespace collapsed"
    # has something to collapse: the words stay the same, the markup does not.
    words = html.escape(text).split(" ")
    i = rng.randrange(1, len(words) - 1)
    words[i] = "<em>%s</em>" % words[i]
    j = rng.randrange(1, len(words) - 1)
    if j != i:
        words[j] = '<a href="/help/care.html">%s</a>' % words[j]
    k = rng.randrange(1, len(words) - 1)
    return " ".join(words[:k]) + "\n      " + " ".join(words[k:])


def product_page(p, products, rng):
    out = [header(p["name"])]
    availability = "In stock" if p["in_stock"] else "Out of stock"
    out.append("""  <div class="container-fluid page"><div class="page_inner">
    <ul class="breadcrumb">
      <li><a href="/index.html">Home</a></li>
      <li><a class="category" href="/category/%s.html">%s</a></li>
      <li class="active">%s</li>
    </ul>
    <article class="product_page">
      <div class="row product_main">
        <div class="col-sm-6"><img class="main" src="/media/cache/%s.jpg" alt="%s"></div>
        <div class="col-sm-6">
          <h1>
            %s
          </h1>
          <p class="price"><span itemprop="price" content="%s">%s %s</span>
            <meta itemprop="priceCurrency" content="%s"></p>
          <p class="availability %s">
            %s
          </p>
          <p class="star-rating %s" data-rating="%d"><i class="icon-star"></i><i class="icon-star"></i>
            <i class="icon-star"></i><i class="icon-star"></i><i class="icon-star"></i></p>
          <form class="add-to-basket" action="/basket/add/%d/" method="post">
            <input type="hidden" name="quantity" value="1"><button type="submit">Add to basket</button>
          </form>
        </div>
      </div>
""" % (urllib.parse.quote(p["category"].lower().replace(" ", "-")), html.escape(p["category"]),
       html.escape(p["name"]), p["slug"], html.escape(p["name"]), html.escape(p["name"]),
       p["price"], p["price"], p["currency"], p["currency"],
       "instock" if p["in_stock"] else "outofstock", availability, RATINGS[p["rating"]],
       p["rating"], p["index"] + 1))
    out.append('      <div id="product_description" class="sub-header"><h2>Product description</h2>\n')
    for text in p["paragraphs"]:
        out.append("      <p>%s</p>\n" % description_html(text, rng))
    out.append("      </div>\n")
    out.append('      <ul class="tags">%s</ul>\n'
               % "".join("<li> %s </li>" % t for t in p["tags"]))
    out.append('      <table class="specs table table-striped">\n'
               '        <tr><th>SKU</th><td class="sku">\n          %s\n        </td></tr>\n'
               % p["sku"])
    for k, v in p["specs"]:
        out.append("        <tr><th>%s</th><td>%s</td></tr>\n" % (k, html.escape(v)))
    out.append("      </table>\n")
    out.append('      <section class="related"><h2>You may also like</h2><ol class="row">\n')
    for r in p["related"]:
        q = products[r]
        out.append('        <li class="col-xs-3"><article class="product_pod related_pod">'
                   '<a href="/product/%s.html"><img src="/media/cache/thumb-%s.jpg" alt=""></a>'
                   '<h3><a href="/product/%s.html" title="%s">%s</a></h3>'
                   '<p class="price_color">%s</p></article></li>\n'
                   % (q["slug"], q["slug"], q["slug"], html.escape(q["name"]),
                      html.escape(q["name"]), q["price"]))
    out.append("      </ol></section>\n")
    out.append('      <section class="reviews"><h2>Reviews</h2>\n')
    for who, stars, text in p["reviews"]:
        out.append('        <div class="review"><p class="who">%s <span class="stars">%s/5</span>'
                   '</p>\n          <blockquote>%s</blockquote></div>\n'
                   % (html.escape(who), stars, html.escape(text)))
    out.append("      </section>\n    </article>\n  </div></div>\n")
    out.append(FOOTER)
    return "".join(out)


def listing_page(n, products):
    out = [header("All products, page %d" % n)]
    out.append('  <div class="container-fluid page"><div class="page_inner">\n'
               '    <h1>All products</h1><p class="count">Page %d of %d</p>\n'
               '    <ol class="row">\n' % (n, LISTING_PAGES))
    for p in products[(n - 1) * PER_PAGE:n * PER_PAGE]:
        out.append('      <li class="col-xs-6 col-sm-4"><article class="product_pod">\n'
                   '        <a href="../product/%s.html"><img src="/media/cache/thumb-%s.jpg"'
                   ' alt="%s"></a>\n'
                   '        <h3><a href="../product/%s.html" title="%s">%s</a></h3>\n'
                   '        <p class="price_color">%s %s</p>\n'
                   '      </article></li>\n'
                   % (p["slug"], p["slug"], html.escape(p["name"]), p["slug"],
                      html.escape(p["name"]), html.escape(p["name"]), p["price"],
                      p["currency"]))
    out.append('    </ol>\n    <ul class="pager">\n')
    if n > 1:
        out.append('      <li class="previous"><a rel="prev" href="page-%d.html">previous</a></li>\n'
                   % (n - 1))
    if n < LISTING_PAGES:
        out.append('      <li class="next"><a rel="next" href="page-%d.html">next</a></li>\n'
                   % (n + 1))
    out.append("    </ul>\n  </div></div>\n")
    out.append(FOOTER)
    return "".join(out)


def collapse(text):
    return " ".join(text.split())


def normalize_item(item):
    """One crawler's item in the form expected.jsonl holds: price as a decimal string with two
    places, rating an int, image the URL's path (the port differs per run), tags a list of
    strings, everything else a string. Returns None fields as None (a mismatch)."""
    out = {}
    for key in ("sku", "name", "currency", "availability", "category", "description"):
        v = item.get(key)
        out[key] = None if v is None else str(v)
    price = item.get("price")
    try:
        out["price"] = str(decimal.Decimal(str(price)).quantize(decimal.Decimal("0.01")))
    except (decimal.InvalidOperation, TypeError, ValueError):
        out["price"] = price
    rating = item.get("rating")
    try:
        out["rating"] = int(rating)
    except (TypeError, ValueError):
        out["rating"] = rating
    image = item.get("image")
    out["image"] = urllib.parse.urlsplit(image).path if isinstance(image, str) else image
    tags = item.get("tags")
    out["tags"] = [str(t) for t in tags] if isinstance(tags, list) else tags
    return out


def expected_item(p):
    return normalize_item({
        "sku": p["sku"], "name": p["name"], "price": p["price"], "currency": p["currency"],
        "availability": "In stock" if p["in_stock"] else "Out of stock",
        "category": p["category"], "rating": p["rating"],
        "description": collapse(p["paragraphs"][0]), "tags": p["tags"],
        "image": "/media/cache/%s.jpg" % p["slug"],
    })


def generate(out_dir, seed):
    rng = random.Random(seed)
    products = make_products(rng)
    site = os.path.join(out_dir, "site")
    os.makedirs(os.path.join(site, "catalogue"), exist_ok=True)
    os.makedirs(os.path.join(site, "product"), exist_ok=True)
    sizes = []
    for p in products:
        page = product_page(p, products, rng).encode()
        sizes.append(len(page))
        with open(os.path.join(site, "product", p["slug"] + ".html"), "wb") as f:
            f.write(page)
    for n in range(1, LISTING_PAGES + 1):
        with open(os.path.join(site, "catalogue", "page-%d.html" % n), "w") as f:
            f.write(listing_page(n, products))
    with open(os.path.join(site, "index.html"), "w") as f:
        f.write(header("Welcome") + '  <p><a href="/catalogue/page-1.html">All products</a></p>\n'
                + FOOTER)
    with open(os.path.join(site, "robots.txt"), "w") as f:
        f.write("User-agent: *\nDisallow:\n")
    with open(os.path.join(out_dir, "expected.jsonl"), "w") as f:
        for item in sorted((expected_item(p) for p in products), key=lambda i: i["sku"]):
            f.write(json.dumps(item, sort_keys=True, ensure_ascii=False) + "\n")
    with open(os.path.join(out_dir, "product_paths.txt"), "w") as f:
        for p in products:
            f.write("/product/%s.html\n" % p["slug"])
    return {"products": len(products), "listing_pages": LISTING_PAGES,
            "product_bytes_mean": sum(sizes) / len(sizes), "product_bytes_min": min(sizes),
            "product_bytes_max": max(sizes)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=6)
    args = parser.parse_args()
    stats = generate(args.out_dir, args.seed)
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
