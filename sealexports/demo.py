"""Deterministic demo data: realistic, skewed traffic for one site (`random.Random(seed)`).

Used by `sealexports seed`, `serve --demo` and the tests. The same arguments give the same rows.
"""

from __future__ import annotations

import bisect
import itertools
import json
import random
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Generic, TypeVar
from zoneinfo import ZoneInfo

from sealexports.storage.visits import Conversion, PageView, Visit

T = TypeVar("T")
DEFAULT_DAYS = 90
DEFAULT_VISITS = 200_000


class Weighted(Generic[T]):
    """Draws from weighted choices in O(log n) with one `random()` call."""

    def __init__(self, items: Sequence[T], weights: Sequence[float]) -> None:
        self.items = list(items)
        self.cum = list(itertools.accumulate(weights))

    def __call__(self, rng: random.Random) -> T:
        return self.items[bisect.bisect(self.cum, rng.random() * self.cum[-1])]


def zipf(items: Sequence[T], s: float = 1.1) -> Weighted[T]:
    return Weighted(items, [1 / (rank**s) for rank in range(1, len(items) + 1)])


# --- Dimensions -------------------------------------------------------------------------------

_ADJ = ("quick fresh smart simple modern classic ultimate hidden practical complete").split()
_NOUN = (
    "guide checklist review comparison tutorial story playbook primer recipe roundup benchmark case-study"
).split()
_TOPIC = (
    "running trail marathon shoes nutrition recovery training gear hydration stretching "
    "cycling swimming yoga strength sleep injuries motivation weather races apparel"
).split()


def _slugs(n: int) -> list[str]:
    combos = itertools.product(_TOPIC, _ADJ, _NOUN)
    return [f"{a}-{b}-{c}" for a, b, c in itertools.islice(combos, n)]


BLOG = [f"/blog/{s}" for s in _slugs(2000)]
PRODUCTS = [
    f"/products/{cat}/{s}"
    for cat, s in zip(
        itertools.cycle(["running", "trail", "accessories", "apparel", "nutrition"]),
        _slugs(800),
        strict=False,
    )
]
DOCS = [
    f"/docs/{topic}/{s}"
    for topic, s in zip(
        itertools.cycle(["getting-started", "sizing", "shipping", "returns", "care"]),
        _slugs(600),
        strict=False,
    )
]
COMPANY = ["/about", "/contact", "/careers", "/press", "/stores"]
SECTIONS = {
    "home": zipf(["/"]),
    "blog": zipf(BLOG, 1.05),
    "products": zipf(PRODUCTS, 1.0),
    "docs": zipf(DOCS, 1.1),
    "company": zipf(COMPANY, 1.2),
    "pricing": zipf(["/pricing"]),
}

# (referrer, utm_source, utm_medium, share, campaigns?, terms?)
_CAMPAIGNS = [
    "spring_sale", "brand", "generic_search", "retargeting", "black_friday", "summer_collection",
    "new_arrivals", "marathon_season", "trail_week", "clearance", "app_install", "loyalty",
    "free_shipping", "gift_guide", "back_to_running", "10k_challenge", "ultra_launch",
    "newsletter_weekly", "welcome_series", "abandoned_cart", "partner_promo", "influencer_q3",
    "video_launch", "local_stores", "flash_sale", "members_only", "referral_bonus", "outlet",
]  # fmt: skip
_TERMS = [
    "running shoes", "trail running shoes", "marathon training plan", "best running shoes",
    "zapatillas running", "running socks", "hydration vest", "gps watch", "running shorts",
    "waterproof trail shoes", "carbon plate shoes", "stability running shoes", "half marathon plan",
    "running belt", "compression socks", "running jacket", "cheap running shoes",
    "wide running shoes", "running shoes women", "running shoes men", "sealrun", "sealrun discount",
    "zapatillas trail", "ultra running gear", "running headlamp", "energy gels",
]  # fmt: skip
_CONTENTS = ["banner_a", "banner_b", "text_ad_1", "text_ad_2", "video_15s", "carousel", "story"]
_PARTNERS = [
    f"{name}.example"
    for name in (
        "runnersworld runblog trailhub marathonfans fitmag sportsdeals shoereview coachcorner "
        "runclub ultrarunner racecalendar gearlab kmpace stridemag paceguide trailnotes "
        "runningtimes fitnessforum joggers mountainrun cityrun raceresults runtips shoefinder "
        "outdoorlife athletehub sportsnews trackclub endurance podiumblog"
    ).split()
]
SOURCES: list[tuple[str | None, str | None, str | None, float, bool, bool]] = [
    (None, None, None, 24.0, False, False),
    ("google.com", "google", "organic", 30.0, False, False),
    ("google.com", "google", "cpc", 8.0, True, True),
    ("bing.com", "bing", "organic", 3.0, False, False),
    ("bing.com", "bing", "cpc", 1.2, True, True),
    ("duckduckgo.com", "duckduckgo", "organic", 1.5, False, False),
    ("search.yahoo.com", "yahoo", "organic", 0.5, False, False),
    ("ecosia.org", "ecosia", "organic", 0.3, False, False),
    ("facebook.com", "facebook", "social", 4.0, False, False),
    ("facebook.com", "facebook", "paid_social", 2.0, True, False),
    ("instagram.com", "instagram", "social", 3.0, False, False),
    ("instagram.com", "instagram", "paid_social", 1.5, True, False),
    ("linkedin.com", "linkedin", "social", 0.8, False, False),
    ("x.com", "twitter", "social", 0.7, False, False),
    ("reddit.com", "reddit", "social", 0.6, False, False),
    ("youtube.com", "youtube", "video", 1.0, True, False),
    ("tiktok.com", "tiktok", "paid_social", 0.9, True, False),
    ("pinterest.com", "pinterest", "social", 0.4, False, False),
    (None, "newsletter", "email", 3.0, True, False),
    (None, "mailchimp", "email", 0.8, True, False),
    ("chatgpt.com", "chatgpt.com", "referral", 1.2, False, False),
    ("perplexity.ai", "perplexity", "referral", 0.4, False, False),
    ("awin1.com", "awin", "affiliate", 1.0, True, False),
    ("strava.com", "strava", "referral", 0.6, False, False),
] + [(p, p, "referral", 4.0 / (i + 1) ** 1.2, False, False) for i, p in enumerate(_PARTNERS)]

COUNTRIES = (
    "ES MX US AR CO FR DE GB IT PT CL PE NL BE CH AT IE SE NO DK FI PL CZ GR RO HU BR CA AU "
    "JP IN CN KR MA TR EC VE UY BO PY CR PA DO GT SV HN NI CU PR ZA NZ SG"
).split()
_COUNTRY = zipf(COUNTRIES, 1.25)

_DEVICE = Weighted(["desktop", "mobile", "tablet"], [45, 48, 7])
_BROWSER = {
    "desktop": Weighted(["Chrome", "Safari", "Edge", "Firefox", "Opera", "Brave"], [62, 12, 12, 10, 3, 1]),
    "mobile": Weighted(["Chrome", "Safari", "Samsung Internet", "Firefox", "Opera"], [55, 35, 7, 2, 1]),
    "tablet": Weighted(["Safari", "Chrome", "Samsung Internet"], [55, 40, 5]),
}
_DESKTOP_OS = Weighted(["Windows", "macOS", "Linux", "ChromeOS"], [70, 20, 8, 2])
_MOBILE_OS = Weighted(["Android", "iOS"], [80, 20])

# Where visits land, by medium.
_LANDING = {
    None: Weighted(["home", "blog", "products", "docs", "company", "pricing"], [45, 15, 25, 5, 5, 5]),
    "organic": Weighted(["home", "blog", "products", "docs", "pricing"], [10, 55, 20, 12, 3]),
    "cpc": Weighted(["home", "products", "pricing"], [20, 75, 5]),
    "email": Weighted(["blog", "products", "home"], [40, 50, 10]),
}
_LANDING_OTHER = Weighted(["home", "blog", "products", "docs"], [20, 45, 30, 5])
_NEXT = Weighted(["same", "products", "blog", "home", "pricing", "docs"], [60, 20, 8, 6, 3, 3])
_HOURS = Weighted(
    list(range(24)),
    [2, 1, 1, 1, 1, 1, 2, 4, 6, 7, 7, 7, 7, 7, 6, 6, 6, 6, 7, 8, 8, 7, 5, 3],
)
_MICRO = {
    "products": [("add_to_cart", 0.09), ("wishlist", 0.02), ("size_guide", 0.03)],
    "blog": [("newsletter", 0.015), ("scroll_75", 0.12), ("share", 0.01)],
    "docs": [("download", 0.04), ("video_play", 0.02)],
    "home": [("video_play", 0.02), ("newsletter", 0.01)],
}
_CONVERSION_PAGES = {
    "purchase": ("/checkout/thank-you", "checkout"),
    "lead": ("/contact/thank-you", "company"),
    "signup": ("/signup/welcome", "account"),
}


def _json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"))


def _os(rng: random.Random, device: str, browser: str) -> str:
    if device == "desktop":
        return "macOS" if browser == "Safari" else "Windows" if browser == "Edge" else str(_DESKTOP_OS(rng))
    if browser == "Safari":
        return "iPadOS" if device == "tablet" else "iOS"
    if browser == "Samsung Internet" or device == "tablet":
        return "Android"
    return _MOBILE_OS(rng)


def _visits_per_day(rng: random.Random, days: list[date], total: int) -> list[int]:
    """Split `total` over days: weekends quieter, a growth trend, some noise; sums exactly."""
    weights = [
        (0.75 if d.weekday() >= 5 else 1.0) * (1 + 0.4 * i / len(days)) * rng.uniform(0.85, 1.15)
        for i, d in enumerate(days)
    ]
    scale = total / sum(weights)
    counts: list[int] = []
    carry = 0.0
    for w in weights:
        carry += w * scale
        counts.append(round(carry) - sum(counts))
    return counts


def generate(
    timezone: str,
    *,
    end: date,
    days: int = DEFAULT_DAYS,
    visits: int = DEFAULT_VISITS,
    seed: int = 42,
    until: datetime | None = None,
) -> Iterator[Visit]:
    """Yield `visits` visits over the `days` local days ending on `end`, in time order.

    With `until` (the present, for a demo ending today) nothing happens after it: later visits
    are left out and a visit in progress keeps only its events so far, so fewer visits come out.
    """
    rng = random.Random(seed)
    tz = ZoneInfo(timezone)
    source = Weighted(SOURCES, [s[3] for s in SOURCES])
    campaign, term, content = zipf(_CAMPAIGNS), zipf(_TERMS, 0.9), zipf(_CONTENTS)
    day_list = [end - timedelta(days=days - 1 - i) for i in range(days)]
    order = itertools.count(1)
    for day, n in zip(day_list, _visits_per_day(rng, day_list, visits), strict=True):
        starts = sorted(
            datetime(day.year, day.month, day.day, _HOURS(rng), rng.randrange(60),
                     rng.randrange(60), tzinfo=tz).astimezone(UTC)
            for _ in range(n)
        )  # fmt: skip
        for start in starts:
            referrer, utm_source, medium, _, paid, keyword = source(rng)
            device = _DEVICE(rng)
            browser = _BROWSER[device](rng)
            visit = Visit(
                pages=[],
                referrer=referrer,
                utm_source=utm_source,
                utm_medium=medium,
                utm_campaign=campaign(rng) if paid else None,
                utm_term=term(rng) if keyword else None,
                utm_content=content(rng) if paid and medium != "email" else None,
                country=_COUNTRY(rng) if rng.random() > 0.004 else None,
                device_type=device,
                browser=browser,
                os=_os(rng, device, browser),
            )
            _fill(rng, visit, start, medium, next(order))
            if until is None:
                yield visit
            elif start <= until:
                yield _cut(visit, until)


def today(timezone: str) -> date:
    """Today's date in the site's time zone: the last day a demo may have."""
    return datetime.now(ZoneInfo(timezone)).date()


def _cut(visit: Visit, until: datetime) -> Visit:
    """The visit as it stands at `until`: its events up to then."""
    visit.pages = [p for p in visit.pages if p.ts <= until]
    visit.conversions = [c for c in visit.conversions if c.ts <= until]
    visit.microconversions = [m for m in visit.microconversions if m.ts <= until]
    return visit


def _fill(rng: random.Random, visit: Visit, start: datetime, medium: str | None, n: int) -> None:
    """Page views, then microconversions on them, then at most one conversion at the end."""
    landing = _LANDING.get(medium, _LANDING_OTHER)
    section = landing(rng)
    length = 1 if rng.random() < 0.42 else min(30, 2 + int(rng.expovariate(0.45)))
    ts = start
    for i in range(length):
        if i:
            step = _NEXT(rng)
            section = section if step == "same" else step
            ts += timedelta(seconds=5 + int(rng.expovariate(1 / 70)))
        path = SECTIONS[section](rng)
        visit.pages.append(PageView(ts, path, section))
        for name, p in _MICRO.get(section, ()):
            if rng.random() < p:
                props = _json({"sku": path.rsplit("/", 1)[1][:24]}) if name == "add_to_cart" else None
                visit.microconversions.append(
                    Conversion(ts + timedelta(seconds=3), name, path, section, 0, props)
                )
    engaged = length > 1
    boost = {"cpc": 1.5, "email": 1.8, "paid_social": 1.2}.get(medium or "", 1.0)
    r = rng.random() / boost
    kind = None
    if r < (0.075 if engaged else 0.004):
        kind = "purchase"
    elif r < (0.100 if engaged else 0.008):
        kind = "lead"
    elif r < (0.122 if engaged else 0.011):
        kind = "signup"
    if kind is None:
        return
    path, group = _CONVERSION_PAGES[kind]
    ts += timedelta(seconds=20 + int(rng.expovariate(1 / 60)))
    visit.pages.append(PageView(ts, path, group))
    if kind == "purchase":
        amount = round(rng.lognormvariate(4.1, 0.6) * 100)
        props = _json({"order_id": f"ORD-{n:07d}", "items": 1 + int(rng.expovariate(0.9)),
                            "currency": "EUR"})  # fmt: skip
    elif kind == "lead":
        amount, props = 1500, _json({"form": "contact"})
    else:
        amount, props = 0, _json({"plan": "trial"})
    visit.conversions.append(Conversion(ts + timedelta(seconds=1), kind, path, group, amount, props))
