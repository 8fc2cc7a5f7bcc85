"""The project's custom task context (``CONDUCTOR["CONTEXT"]``): ``ctx.mailer``."""

import logging

logger = logging.getLogger("crm.mailer")


class Mailer:
    """Stands in for an e-mail client: built once per worker process, shared by threads."""

    def send(self, to: str, subject: str) -> dict:
        logger.info("sending %r to %s", subject, to)
        return {"to": to, "subject": subject}


def services() -> dict:
    return {"mailer": Mailer()}
