"""The upstream tests that cannot apply to a database backend, and why.

Keys are ``module.Class.test``; every other upstream test of ``source.MODULES`` runs
against ``ConductorBackend`` and must pass. ``BACKPORT_SKIPS`` apply on Django 5.2 only,
where Django's suite runs on the ``django_tasks`` backport: the behaviour of Django's
own ``Task`` class that the backport (0.12) does not have yet, whatever the backend.
"""

#: Upstream test modules not run at all.
SET_ASIDE_MODULES = {
    "test_custom_backend": "tests backend classes defined in the test module itself; "
                           "ConductorBackend takes no part",
    # django-tasks-db 0.12.0 (the backport's database backend): its sdist ships
    # tests/tests.py without the tests/tasks.py it imports, and that module imports the
    # reference backend's model (DBTaskResult) and worker command at the top, so it cannot
    # be imported unless django_tasks_db is an installed app. Of its 28 backend tests, 10
    # query DBTaskResult, the others check the sender class DatabaseBackend, its query
    # count, uuid4 ids, its system checks and ID_FUNCTION option, or repeat Django's own
    # tests above (get_result, unknown ids, validation on enqueue, enqueue logs); its 58
    # worker, locking and pruning tests drive db_worker and prune_db_task_results. What
    # they check of a worker (SystemExit and KeyboardInterrupt recorded as the task's
    # errors, an idle worker stopping at once on SIGTERM) is tested against
    # conductor_worker in tests/test_django_tasks_conformance.py.
    "django_tasks_db tests": "the reference database backend's own model, worker and "
                             "options; see above",
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

_NOT_IN_BACKPORT = "Django 6.1's Task behaviour that the django_tasks backport does not have: "

BACKPORT_SKIPS: dict[str, str] = {
    "test_tasks.TaskTestCase.test_pickle_task": _NOT_IN_BACKPORT + "pickling a Task",
    "test_tasks.TaskTestCase.test_pickle_task_result":
        _NOT_IN_BACKPORT + "pickling a TaskResult (it holds its Task)",
    "test_tasks.TaskTestCase.test_unpickle_arbitrary_string":
        _NOT_IN_BACKPORT + "Task._reconstruct (unpickling)",
    "test_tasks.TaskTestCase.test_unpickle_non_task_object":
        _NOT_IN_BACKPORT + "Task._reconstruct (unpickling)",
    "test_tasks.TaskTestCase.test_run_after_in_decorator":
        _NOT_IN_BACKPORT + "the decorator's own error for run_after",
    "test_dummy_backend.DummyBackendTestCase.test_validate_disallowed_async_task":
        _NOT_IN_BACKPORT + "the message's wording ('async Tasks'; the backport says "
        "'async tasks')",
}
