"""User-Agent strings to (device_type, browser, os), by ua-parser (uap-core's rules, shipped in
ua-parser-builtins, so nothing is fetched at run time) with its Rust resolver when installed.

ua-parser names browsers and systems; it does not say desktop, mobile or tablet. We derive that
from what it found (the device, the system) and the `Mobile` token that browsers on phones send,
and we map a few names onto one spelling per product, so that filters see one value for it
("Mobile Safari" is Safari, "Mac OS X" is macOS).
"""

from __future__ import annotations

from functools import lru_cache

# Several ua-parser families are one browser for our purposes; device_type tells them apart.
_BROWSERS = {
    "Mobile Safari": "Safari",
    "Mobile Safari UI/WKWebView": "Safari",
    "Chrome Mobile": "Chrome",
    "Chrome Mobile iOS": "Chrome",
    "Chrome Mobile WebView": "Chrome",
    "Firefox Mobile": "Firefox",
    "Firefox iOS": "Firefox",
    "Edge Mobile": "Edge",
    "Opera Mobile": "Opera",
    "Samsung Internet": "Samsung Internet",
}
_OSES = {"Mac OS X": "macOS", "Chrome OS": "ChromeOS"}
_MOBILE_OSES = {"iOS", "Android", "Windows Phone", "BlackBerry OS", "KaiOS", "Firefox OS", "HarmonyOS"}
_TABLET_WORDS = ("iPad", "Tablet", "Kindle", "Nexus 7", "Nexus 9", "Nexus 10")


@lru_cache(maxsize=8192)
def parse_user_agent(ua: str) -> tuple[str | None, str | None, str | None]:
    """(device_type, browser, os) for a User-Agent string; None where it tells nothing."""
    from ua_parser import parse  # its rules load on the first User-Agent: imports without one skip them

    result = parse(ua)
    browser = result.user_agent.family if result.user_agent else None
    os_name = result.os.family if result.os else None
    device = result.device
    if browser == "Other":
        browser = None
    if os_name == "Other":
        os_name = None
    device_type: str | None
    described = " ".join(filter(None, (device.family, device.brand, device.model))) if device else ""
    if device is not None and device.family == "Spider":
        device_type = None  # a bot: it has no screen to speak of
    elif any(word in described for word in _TABLET_WORDS):
        device_type = "tablet"
    elif os_name == "Android" and "Mobile" not in ua:
        device_type = "tablet"  # Android browsers on phones say Mobile; on tablets they do not
    elif os_name in _MOBILE_OSES or "Mobile" in ua:
        device_type = "mobile"
    elif os_name is not None:
        device_type = "desktop"
    else:
        device_type = None
    if device_type == "tablet" and os_name == "iOS":
        os_name = "iPadOS"
    if browser is not None:
        browser = _BROWSERS.get(browser, browser)
    if os_name is not None:
        os_name = _OSES.get(os_name, os_name)
    return device_type, browser, os_name
