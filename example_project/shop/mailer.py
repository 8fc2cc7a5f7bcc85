"""A stand-in mail sender for the example project: it logs instead of sending."""

import logging

logger = logging.getLogger(__name__)


def send(to: str, body: str) -> dict:
    logger.info("mail to %s: %s", to, body)
    return {"to": to}
