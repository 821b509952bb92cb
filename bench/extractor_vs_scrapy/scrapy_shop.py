"""The Scrapy side of the benchmark: crawl the generated shop from its first listing page.

    /usr/bin/python3 -m scrapy runspider scrapy_shop.py -a start_url=http://127.0.0.1:PORT/catalogue/page-1.html \\
        -O items.jsonl

run.py passes the settings on the command line (64 concurrent requests, no delays, robots off,
no autothrottle); custom_settings below holds the same values so a hand run measures the same.
The selectors and text handling are the ones gen_site.py documents and celeriac_config.json uses.
"""
import scrapy


def collapsed(selection):
    """All text of the first selected element, whitespace collapsed (the config's
    `text: normalized`); None when nothing matched."""
    text = selection.xpath("string()").get()
    return None if text is None else " ".join(text.split())


class ShopSpider(scrapy.Spider):
    name = "shop"
    custom_settings = {
        "CONCURRENT_REQUESTS": 64,
        "CONCURRENT_REQUESTS_PER_DOMAIN": 64,
        "DOWNLOAD_DELAY": 0,
        "ROBOTSTXT_OBEY": False,
        "AUTOTHROTTLE_ENABLED": False,
        "LOG_LEVEL": "WARNING",
        "TELNETCONSOLE_ENABLED": False,
        "FEED_EXPORT_ENCODING": "utf-8",
    }

    def __init__(self, start_url=None, **kwargs):
        super().__init__(**kwargs)
        if not start_url:
            raise ValueError("pass -a start_url=http://HOST:PORT/catalogue/page-1.html")
        self.start_urls = [start_url]

    def parse(self, response):
        """A listing page: follow every product and the next page."""
        for href in response.css("article.product_pod h3 a::attr(href)").getall():
            yield response.follow(href, callback=self.parse_product)
        next_page = response.css("li.next a[rel=next]::attr(href)").get()
        if next_page:
            yield response.follow(next_page, callback=self.parse)

    def parse_product(self, response):
        main = response.css("div.product_main")
        sku = response.css("table.specs td.sku").xpath("string()").get()
        price = main.css("[itemprop=price]::attr(content)").get()
        rating = main.css("p.star-rating::attr(data-rating)").get()
        image = main.css("img.main::attr(src)").get()
        yield {
            "sku": sku.strip() if sku is not None else None,
            "name": collapsed(main.css("h1")),
            "price": price,
            "currency": main.css("meta[itemprop=priceCurrency]::attr(content)").get(),
            "availability": collapsed(main.css("p.availability")),
            "category": collapsed(response.css("ul.breadcrumb a.category")),
            "rating": int(rating) if rating is not None else None,
            "description": collapsed(response.css("div#product_description p")),
            "tags": [t.strip() for t in response.css("ul.tags li").xpath("string()").getall()],
            "image": response.urljoin(image) if image is not None else None,
        }
