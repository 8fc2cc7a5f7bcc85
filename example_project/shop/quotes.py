"""A stand-in for an HTTP API client with ``async`` calls (think ``httpx.AsyncClient``):
each call takes a little while and answers from a fixed price list."""

import asyncio
from decimal import Decimal

PRICES = {"tea": Decimal("3.20"), "coffee": Decimal("2.80"), "cake": Decimal("4.50")}


async def fetch_price(item: str) -> str:
    """GET /prices/<item>: the unit price, as a string (JSON has no decimals)."""
    await asyncio.sleep(0.05)  # the network
    if item not in PRICES:
        raise LookupError(f"no price for {item!r}")
    return str(PRICES[item])


async def fetch_discount(customer: str) -> int:
    """GET /customers/<customer>/discount: a percentage."""
    await asyncio.sleep(0.05)
    return 10 if customer.startswith("vip-") else 0
