"""Engines other than the default one (``CONDUCTOR["ENGINE"]``); see
``conductor_django.runtime.dispatch``, which loads them by their dotted path."""
