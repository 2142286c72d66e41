"""ISO 4217 currencies and their minor units (how many decimals an amount may have), so that a
budget is validated once and converted exactly for each platform (Meta: minor units; Google:
micros).

Active currencies only (ISO 4217 list one); funds, precious metals and the testing codes
(XAU, XDR, XTS, XXX, ...) are not currencies a budget is spent in.
"""

from __future__ import annotations

from decimal import Decimal

_ZERO_DECIMALS = "BIF CLP DJF GNF ISK JPY KMF KRW PYG RWF UGX VND VUV XAF XOF XPF"
_THREE_DECIMALS = "BHD IQD JOD KWD LYD OMR TND"
_TWO_DECIMALS = (
    "AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BMD BND BOB BRL BSD BTN BWP BYN "
    "BZD CAD CDF CHF CNY COP CRC CUP CVE CZK DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS "
    "GIP GMD GTQ GYD HKD HNL HTG HUF IDR ILS INR IRR JMD KES KGS KHR KPW KYD KZT LAK LBP LKR "
    "LRD LSL MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD "
    "PAB PEN PGK PHP PKR PLN QAR RON RSD RUB SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN "
    "SVC SYP SZL THB TJS TMT TOP TRY TTD TWD TZS UAH USD UYU UZS VED VES WST XCD XCG YER ZAR "
    "ZMW ZWG"
)

MINOR_UNITS: dict[str, int] = {
    **dict.fromkeys(_TWO_DECIMALS.split(), 2),
    **dict.fromkeys(_ZERO_DECIMALS.split(), 0),
    **dict.fromkeys(_THREE_DECIMALS.split(), 3),
}


def check_currency(code: str) -> str:
    """`code` if it is an ISO 4217 currency; ValueError otherwise."""
    if code not in MINOR_UNITS:
        raise ValueError(f"{code!r} is not an ISO 4217 currency code")
    return code


def check_amount(amount: Decimal, currency: str) -> Decimal:
    """`amount` if it has no more decimals than `currency` has minor units (25.5 JPY has)."""
    units = MINOR_UNITS.get(currency)
    if units is None:
        return amount
    exponent = amount.normalize().as_tuple().exponent
    if isinstance(exponent, int) and -exponent > units:
        raise ValueError(
            f"{currency} has {units} decimal place{'s' if units != 1 else ''}; {amount} has more"
        )
    return amount
