"""Imported by nothing: a test checks that invoking a task named after it does not import it.

Importing it leaves a mark in ``sys.modules`` and in the environment.
"""

import os

os.environ["CONDUCTOR_IMPORT_CANARY"] = "imported"


def handler(*args):
    return None
