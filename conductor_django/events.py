"""Events (``emit``) and model triggers (``task(on_model=...)``).

``emit(name, payload)`` starts one execution of every task subscribed with
``task(events=[name])``, all in one transaction inside the caller's: if the caller's
transaction rolls back, none of them exists.

A model trigger ``task(on_model=("app_label.Model", action), fields=[...])`` starts an
execution once the transaction that saved (or deleted) an instance commits, with the
payload ``{"pk": ..., "old": {...}, "new": {...}}`` limited to ``fields`` (every
concrete field but the primary key when omitted). ``old`` is None on create, ``new``
None on delete; an update that changes none of the fields starts nothing. The values
are JSON (``DjangoJSONEncoder``: dates as ISO strings, decimals and UUIDs as strings).

Receivers are connected only to models that have triggers (and their proxies), so other
models keep Django's fast deletes. They follow ``Model.save()`` and ``delete()``:
``QuerySet.update()``, ``bulk_create()`` and ``bulk_update()`` send no signals and start
nothing; ``QuerySet.delete()`` and cascades do start delete triggers, one per row;
fixture loading (``raw`` saves) starts nothing. An update trigger reads the old values
with one query before the save (skipped when ``update_fields`` names none of them).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.core.exceptions import FieldDoesNotExist, ValidationError
from django.core.serializers.json import DjangoJSONEncoder
from django.db import models, router, transaction
from django.db.models.signals import ModelSignal, post_delete, post_save, pre_save
from django.utils import timezone

from .api import insert, prepare
from .definitions import registry
from .definitions.registry import Task, all_tasks
from .definitions.values import check_text
from .models import Execution
from .store.transactions import retry_locked, write_transaction

logger = logging.getLogger("conductor_django")

EMIT_OPTIONS = ("dedupe_key", "priority", "run_at", "delay", "queue")


# --- emit ------------------------------------------------------------------------------


#: Stands in for a subscriber when an event has none: its payload and options are still
#: checked.
_UNSUBSCRIBED = Task(func=lambda event, ctx: None, name="conductor.emit")


def subscribers(name: str) -> list[Task]:
    """The tasks subscribed to the event ``name``, by task name."""
    return [t for _, t in sorted(all_tasks().items()) if name in t.events]


def emit(name: str, payload: Any = None, **options: Any) -> list[str]:
    """Start one execution per task subscribed to ``name``; returns their ids.

    ``options`` are those of ``invoke`` (``dedupe_key``, ``priority``, ``run_at``,
    ``delay``, ``queue``), applied to every execution. Bad input raises before anything
    is written.
    """
    if not isinstance(name, str) or not name or len(name) > 200:
        raise ValueError(f"event name must be a non-empty str of at most 200 characters, "
                         f"got {name!r}")
    check_text(name, "event name")
    unknown = sorted(set(options) - set(EMIT_OPTIONS))
    if unknown:
        raise TypeError(f"emit() got unknown options {unknown}; valid: {list(EMIT_OPTIONS)}")
    tasks = subscribers(name)
    now = timezone.now()
    if not tasks:
        # bad input is refused alike with and without subscribers
        prepare(_UNSUBSCRIBED, payload, direct=False, now=now, **options)
        logger.debug("event %s has no subscribers", name)
        return []
    prepared = [prepare(t, payload, direct=False, now=now, **options) for t in tasks]
    using = router.db_for_write(Execution)

    def insert_all() -> list[str]:
        with write_transaction(using):
            return [insert(new, using, event_name=name) for new in prepared]

    return retry_locked(insert_all, using)


# --- model triggers --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Trigger:
    """One task's trigger on one model, with its fields resolved."""

    task: Task
    event_name: str
    fields: tuple[tuple[str, models.Field], ...]  # (name in the payload, field)


#: model class -> action -> triggers; rebuilt by ``sync`` whenever the registry changes.
_index: dict[type[models.Model], dict[str, list[Trigger]]] = {}
_connected: set[tuple[str, type[models.Model]]] = set()
OLD = "_conductor_old_values"


def resolve_model(label: str) -> type[models.Model]:
    """The model named ``"app_label.Model"`` (case-insensitive); ``LookupError`` if none."""
    return apps.get_model(label)


def resolve_fields(model: type[models.Model],
                   names: Sequence[str] | None) -> tuple[tuple[str, models.Field], ...]:
    """The concrete fields ``names`` of ``model`` (all but the pk when ``None``)."""
    opts = model._meta
    if names is None:
        return tuple((f.name, f) for f in opts.concrete_fields if not f.primary_key)
    out: list[tuple[str, models.Field]] = []
    for name in names:
        try:
            field = opts.get_field(name)
        except FieldDoesNotExist:
            raise ValueError(f"{opts.label} has no field {name!r}") from None
        if (not isinstance(field, models.Field) or not getattr(field, "concrete", False)
                or field.many_to_many or not field.column):
            raise ValueError(f"{opts.label}.{name} is not a concrete field (a column)")
        out.append((name, field))
    return tuple(out)


def sync() -> None:
    """Rebuild the trigger index and connect receivers to exactly the models that need them.

    Tasks naming an unknown model or field are skipped here (the system check
    ``conductor_django.E008`` reports them).
    """
    if not apps.models_ready:
        return  # AppConfig.ready() calls this again
    index: dict[type[models.Model], dict[str, list[Trigger]]] = {}
    for _, t in sorted(all_tasks().items()):
        if t.on_model is None:
            continue
        label, action = t.on_model
        try:
            model = resolve_model(label)
            fields = resolve_fields(model, t.fields)
        except (LookupError, ValueError) as exc:
            logger.warning("model trigger of task %s is ignored: %s", t.name, exc)
            continue
        trigger = Trigger(t, f"{model._meta.label_lower}.{action}", fields)
        targets = [model] + [m for m in apps.get_models()
                             if m._meta.proxy and issubclass(m, model) and m is not model]
        for target in targets:
            index.setdefault(target, {}).setdefault(action, []).append(trigger)
    wanted = set()
    for model, actions in index.items():
        if "update" in actions:
            wanted.add(("pre_save", model))
        if "create" in actions or "update" in actions:
            wanted.add(("post_save", model))
        if "delete" in actions:
            wanted.add(("post_delete", model))
    _index.clear()
    _index.update(index)
    for name, model in _connected - wanted:
        SIGNALS[name][0].disconnect(sender=model, dispatch_uid=f"conductor_django.{name}")
    for name, model in wanted - _connected:
        signal, receiver = SIGNALS[name]
        signal.connect(receiver, sender=model, weak=False,
                       dispatch_uid=f"conductor_django.{name}")
    _connected.clear()
    _connected.update(wanted)


class _Encoder(DjangoJSONEncoder):
    def default(self, o: Any) -> Any:
        try:
            return super().default(o)
        except TypeError:
            return str(o)


def _json(value: Any) -> Any:
    return json.loads(json.dumps(value, cls=_Encoder))


def _current(instance: models.Model, field: models.Field) -> Any:
    """The instance's value of ``field`` as the database would give it back."""
    value = getattr(instance, field.attname)
    try:
        return field.to_python(value)
    except (ValidationError, TypeError, ValueError):
        return value


def _snapshot(instance: models.Model, triggers: list[Trigger]) -> dict[str, Any]:
    return {name: _current(instance, field) for t in triggers for name, field in t.fields}


def _pre_save(sender: type[models.Model], instance: models.Model, raw: bool = False,
              using: str = "default", update_fields: Any = None, **kwargs: Any) -> None:
    """Read the old values of the fields update triggers watch."""
    instance.__dict__.pop(OLD, None)
    triggers = _index.get(sender, {}).get("update")
    if raw or not triggers or instance.pk is None:
        return
    if instance._state.adding and sender._meta.pk.has_default():
        return  # Django inserts a new instance whose pk has a default
    fields = {name: field for t in triggers for name, field in t.fields}
    if update_fields is not None:
        fields = {n: f for n, f in fields.items() if f.name in update_fields}
    if not fields:
        return
    row = (sender._base_manager.using(using).filter(pk=instance.pk)
           .values(*{f.attname for f in fields.values()}).first())
    if row is not None:
        instance.__dict__[OLD] = {name: row[f.attname] for name, f in fields.items()}


def _post_save(sender: type[models.Model], instance: models.Model, created: bool = False,
               raw: bool = False, using: str = "default", **kwargs: Any) -> None:
    old = instance.__dict__.pop(OLD, None)
    if raw:
        return
    actions = _index.get(sender, {})
    starts = []
    if created:
        for t in actions.get("create", ()):
            new = _snapshot(instance, [t])
            starts.append((t, {"pk": instance.pk, "old": None, "new": new}))
    elif old is not None:
        for t in actions.get("update", ()):
            if not all(name in old for name, _ in t.fields):
                continue  # update_fields left some of them out
            before = {name: old[name] for name, _ in t.fields}
            after = _snapshot(instance, [t])
            if before != after:
                starts.append((t, {"pk": instance.pk, "old": before, "new": after}))
    _start_on_commit(starts, using)


def _post_delete(sender: type[models.Model], instance: models.Model,
                 using: str = "default", **kwargs: Any) -> None:
    starts = [
        (t, {"pk": instance.pk, "old": _snapshot(instance, [t]), "new": None})
        for t in _index.get(sender, {}).get("delete", ())
    ]
    _start_on_commit(starts, using)


def _start_on_commit(starts: list[tuple[Trigger, dict[str, Any]]], using: str) -> None:
    """Prepare the executions now; insert them when the saving transaction commits."""
    if not starts:
        return
    prepared = [(prepare(t.task, _json(payload), direct=False), t.event_name)
                for t, payload in starts]

    def start() -> None:
        db = router.db_for_write(Execution)
        with write_transaction(db):
            for new, event_name in prepared:
                insert(new, db, event_name=event_name)

    transaction.on_commit(start, using=using)


SIGNALS: dict[str, tuple[ModelSignal, Any]] = {
    "pre_save": (pre_save, _pre_save),
    "post_save": (post_save, _post_save),
    "post_delete": (post_delete, _post_delete),
}

registry.on_change.append(sync)
