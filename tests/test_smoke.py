import pytest

import conductor_django as conductor
from conductor_django.testing import drain


@pytest.mark.django_db
def test_invoke_and_drain():
    eid = conductor.invoke("echo", {"a": 1})
    assert drain() == 1
    ex = conductor.get(eid)
    assert ex.status == "completed", ex.last_error
    assert ex.result == {"payload": {"a": 1}, "attempt": 1, "queue": "default"}
