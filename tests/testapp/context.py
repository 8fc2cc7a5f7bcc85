"""The custom context of the test settings (``CONDUCTOR["CONTEXT"]``)."""

import os
from dataclasses import dataclass

BUILDS: list[int] = []


@dataclass(frozen=True)
class Services:
    build_number: int
    pid: int

    def greet(self, name: str) -> str:
        return f"hello {name}"


def build() -> dict:
    BUILDS.append(os.getpid())
    return {"services": Services(build_number=len(BUILDS), pid=os.getpid())}


def bad_names() -> dict:
    return {"step": object()}


def not_a_dict() -> list:
    return ["services"]
