"""Fewer index entries for every execution: each of an execution's three writes
(insert, claim, finish) adds an entry to every index whose condition its new row
version meets, and on the drain's hot path those writes are most of the database's work.

* ``parent`` and ``forked_from`` are indexed for the rows that have one only (partial
  ``cdj_exec_parent_idx``, ``cdj_exec_forked_idx``): a lookup by either column names a
  value, which the partial index covers; plain executions add no entry to them.
* ``cdj_exec_key_running_idx`` (the running executions of a key) holds rows with a key
  only: per-key counts name a key; the task-wide count has its own index.
* PostgreSQL: ``cdj_exec_key_claim_idx`` is dropped. The claim function probes keys
  through its byte-ordered copy ``cdj_exec_key_claim_c_idx`` (0018) only, so every
  runnable row was indexed twice for one use. The models still declare the index (the
  other databases' keyed claims read it); on PostgreSQL this migration and its reverse
  keep it out.
"""

import django.db.models.deletion
from django.db import migrations, models

TABLE = "conductor_django_execution"
KEY_CLAIM = "cdj_exec_key_claim_idx"


def drop_key_claim(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {KEY_CLAIM}")


def restore_key_claim(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {KEY_CLAIM} ON {TABLE}"
            " (task_name, flow_key, priority DESC, run_at)"
            " WHERE status IN ('pending', 'suspended')"
        )


class Migration(migrations.Migration):

    dependencies = [
        ("conductor_django", "0018_claim_byte_order"),
    ]

    operations = [
        migrations.RemoveIndex(
            model_name="execution",
            name="cdj_exec_key_running_idx",
        ),
        migrations.AlterField(
            model_name="execution",
            name="forked_from",
            field=models.ForeignKey(
                blank=True, db_index=False,
                help_text="The execution this one was forked from (conductor.fork).",
                null=True, on_delete=django.db.models.deletion.SET_NULL, related_name="forks",
                to="conductor_django.execution"),
        ),
        migrations.AlterField(
            model_name="execution",
            name="parent",
            field=models.ForeignKey(
                blank=True, db_index=False, null=True,
                on_delete=django.db.models.deletion.SET_NULL, related_name="children",
                to="conductor_django.execution"),
        ),
        migrations.AddIndex(
            model_name="execution",
            index=models.Index(condition=models.Q(("status", "running"), ("key__isnull", False)),
                               fields=["task_name", "key"], name="cdj_exec_key_running_idx"),
        ),
        migrations.AddIndex(
            model_name="execution",
            index=models.Index(condition=models.Q(("parent__isnull", False)), fields=["parent"],
                               name="cdj_exec_parent_idx"),
        ),
        migrations.AddIndex(
            model_name="execution",
            index=models.Index(condition=models.Q(("forked_from__isnull", False)),
                               fields=["forked_from"], name="cdj_exec_forked_idx"),
        ),
        migrations.RunPython(drop_key_claim, restore_key_claim, elidable=False),
    ]
