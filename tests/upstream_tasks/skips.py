"""The upstream tests that cannot apply to a database backend, and why.

Keys are ``module.Class.test``; every other upstream test of ``source.MODULES`` runs
against ``ConductorBackend`` and must pass.
"""

#: Upstream test modules not run at all.
SET_ASIDE_MODULES = {
    "test_custom_backend": "tests backend classes defined in the test module itself; "
                           "ConductorBackend takes no part",
}

_CLASS = ("asserts that the backend is an instance of Django's reference backend class "
          "(here it is ConductorBackend)")
_RESULTS_ASYNC = ("reads DummyBackend.results, an in-memory list, from async code; a "
                  "database backend's results are rows, which async code reads with await")
_MUTATES = ("changes a result by mutating DummyBackend's in-memory copy; a database "
            "backend's result changes when a worker runs the task")
_IMMEDIATE = "asserts a limitation of ImmediateBackend that ConductorBackend does not have: "

SKIPS: dict[str, str] = {
    "test_tasks.TaskTestCase.test_using_correct_backend": _CLASS,
    "test_tasks.TaskTestCase.test_get_backend": _CLASS,
    "test_tasks.TaskTestCase.test_enqueue_task_async": _RESULTS_ASYNC,
    "test_tasks.TaskTestCase.test_refresh_result": (
        "calls the synchronous result.refresh() from async code, which only a backend "
        "that does not query may allow (Django forbids queries there); arefresh() is "
        "tested by test_dummy_backend's and our own tests"),
    "test_dummy_backend.DummyBackendTestCase.test_using_correct_backend": _CLASS,
    "test_dummy_backend.DummyBackendTestCase.test_enqueue_task_async": _RESULTS_ASYNC,
    "test_dummy_backend.DummyBackendTestCase.test_refresh_result": _MUTATES,
    "test_dummy_backend.DummyBackendTestCase.test_refresh_result_async": _MUTATES,
    "test_immediate_backend.ImmediateBackendTestCase.test_using_correct_backend": _CLASS,
    "test_immediate_backend.ImmediateBackendTestCase.test_cannot_get_result":
        _IMMEDIATE + "results can be fetched again",
    "test_immediate_backend.ImmediateBackendTestCase.test_cannot_refresh_result":
        _IMMEDIATE + "results can be refreshed",
    "test_immediate_backend.ImmediateBackendTestCase.test_cannot_pass_run_after":
        _IMMEDIATE + "run_after is supported",
    "test_immediate_backend.ImmediateBackendTestCase.test_throws_keyboard_interrupt": (
        "ImmediateBackend runs the task in the caller and lets its KeyboardInterrupt "
        "through to it; a worker records it as the task's error, as Django's database "
        "worker does"),
}
