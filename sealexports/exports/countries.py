"""English short names for ISO 3166-1 alpha-2 codes (the `country_name` column)."""

from __future__ import annotations

_NAMES = """
AD Andorra|AE United Arab Emirates|AF Afghanistan|AL Albania|AM Armenia|AO Angola|AR Argentina
AT Austria|AU Australia|AZ Azerbaijan|BA Bosnia and Herzegovina|BD Bangladesh|BE Belgium
BG Bulgaria|BH Bahrain|BO Bolivia|BR Brazil|BY Belarus|BZ Belize|CA Canada|CH Switzerland
CI Côte d'Ivoire|CL Chile|CM Cameroon|CN China|CO Colombia|CR Costa Rica|CU Cuba|CY Cyprus
CZ Czechia|DE Germany|DK Denmark|DO Dominican Republic|DZ Algeria|EC Ecuador|EE Estonia|EG Egypt
ES Spain|ET Ethiopia|FI Finland|FR France|GB United Kingdom|GE Georgia|GH Ghana|GR Greece
GT Guatemala|HK Hong Kong|HN Honduras|HR Croatia|HU Hungary|ID Indonesia|IE Ireland|IL Israel
IN India|IQ Iraq|IR Iran|IS Iceland|IT Italy|JM Jamaica|JO Jordan|JP Japan|KE Kenya|KR South Korea
KW Kuwait|KZ Kazakhstan|LB Lebanon|LK Sri Lanka|LT Lithuania|LU Luxembourg|LV Latvia|MA Morocco
MC Monaco|MD Moldova|ME Montenegro|MK North Macedonia|MT Malta|MX Mexico|MY Malaysia|NG Nigeria
NI Nicaragua|NL Netherlands|NO Norway|NP Nepal|NZ New Zealand|OM Oman|PA Panama|PE Peru
PH Philippines|PK Pakistan|PL Poland|PR Puerto Rico|PT Portugal|PY Paraguay|QA Qatar|RO Romania
RS Serbia|RU Russia|SA Saudi Arabia|SE Sweden|SG Singapore|SI Slovenia|SK Slovakia|SN Senegal
SV El Salvador|TH Thailand|TN Tunisia|TR Türkiye|TT Trinidad and Tobago|TW Taiwan|TZ Tanzania
UA Ukraine|UG Uganda|US United States|UY Uruguay|UZ Uzbekistan|VE Venezuela|VN Vietnam
ZA South Africa|ZM Zambia|ZW Zimbabwe
"""

COUNTRY_NAMES: dict[str, str] = dict(
    item.split(" ", 1) for item in _NAMES.replace("\n", "|").split("|") if item
)


def country_name(code: str | None) -> str | None:
    """The name for a code; None for a missing or unlisted code."""
    return COUNTRY_NAMES.get(code) if code else None
