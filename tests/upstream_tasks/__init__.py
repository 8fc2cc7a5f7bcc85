"""Django's own tests of its tasks framework, run against ``ConductorBackend``.

The upstream test files are not stored here: ``source.py`` downloads the source
distribution of the installed Django at test time, extracts its ``tests/tasks/`` and
adapts it as little as possible (``source.ADAPTATIONS``); ``skips.py`` lists the
upstream tests that cannot apply to a database backend, and why.
"""
