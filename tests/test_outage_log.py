"""A database that goes away is logged as an outage, not as a traceback per retry."""

from __future__ import annotations

import logging

from django.db import OperationalError

from conductor_django.runtime.retry import Outage


def test_an_outage_is_one_traceback_short_retries_and_one_line_when_back(caplog):
    caplog.set_level(logging.INFO, logger="conductor_django.worker")
    outage = Outage("the worker loop")
    outage.recovered()  # nothing was wrong: nothing is logged
    assert caplog.records == []
    for pause in (0.1, 0.2, 0.4, 0.8):
        outage.failed(OperationalError("server closed the connection\nunexpectedly"), pause)
    outage.recovered()
    first, *retries, back = caplog.records
    assert first.getMessage() == ("database error in the worker loop (OperationalError: "
                                  "server closed the connection); retrying in 0.1 s")
    assert first.exc_info is not None  # the one traceback of the outage
    assert len(retries) == 3
    for record in retries:
        assert record.exc_info is None
        assert record.getMessage().startswith(
            "database still unavailable for the worker loop after ")
        assert "(OperationalError: server closed the connection); retrying" in record.getMessage()
    assert back.getMessage().startswith("database back for the worker loop after ")
    assert back.getMessage().endswith("(3 retries)")
    caplog.clear()
    outage.failed(OperationalError("again"), 0.1)  # a new outage starts over
    assert caplog.records[0].exc_info is not None
