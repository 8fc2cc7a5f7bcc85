"""What keeps bad input in a URL or a form from reaching the database as a 500.

* ``StorableLookups``: a list URL whose query string holds text no row can contain (a
  NUL, a lone surrogate: ``?task_name=a%00b``, ``?q=%00``) is refused as an invalid
  lookup (Django's "?e=1" page), before any query runs: PostgreSQL would refuse the
  text with a ``DataError``.
* ``PayloadField``: the JSON of a form is checked as ``conductor.schedule`` checks a
  payload (``definitions.values.check_json``): NaN, nesting deeper than the limit, NUL
  or a lone surrogate in a string are form errors.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import ValidationError
from django.forms.fields import InvalidJSONInput
from django.http import HttpRequest

from ..definitions.values import MAX_JSON_DEPTH, check_json, unstorable


class StorableLookups:
    """Mixed into a ``ModelAdmin``: refuse list filters and searches with unstorable text."""

    def get_changelist_instance(self, request: HttpRequest) -> Any:
        for key, values in request.GET.lists():
            for text in (key, *values):
                if unstorable(text):
                    raise IncorrectLookupParameters(f"{key!r}: {unstorable(text)}")
        return super().get_changelist_instance(request)  # type: ignore[misc]


class PayloadField(forms.JSONField):
    """A JSON form field whose value must be storable as a payload."""

    def to_python(self, value: Any) -> Any:
        try:
            return super().to_python(value)
        except RecursionError:
            raise ValidationError(f"The JSON nests deeper than {MAX_JSON_DEPTH} levels.",
                                  code="invalid") from None

    def bound_data(self, data: Any, initial: Any) -> Any:
        """What the form shows again: the text as typed when it is not a storable payload
        (a lone surrogate decoded from ``\\ud800`` could not even be rendered)."""
        try:
            value = super().bound_data(data, initial)
            if not isinstance(value, InvalidJSONInput) and data is not None:
                check_json(value)
        except (RecursionError, TypeError, ValueError):
            return InvalidJSONInput(data)
        return value

    def validate(self, value: Any) -> None:
        super().validate(value)
        try:
            check_json(value, "The payload")
        except (TypeError, ValueError) as exc:
            raise ValidationError(str(exc), code="invalid") from None
