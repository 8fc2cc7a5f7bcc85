"""MySQL and MariaDB: what Django cannot build there from the models' ``Meta``.

Django creates no conditional unique constraint on MySQL (models.W036) and turns a
partial index into a plain one over the whole table (models.W037). The two
conditional uniques carry behaviour, and the claim needs an index of the runnable
rows alone, so on MySQL this migration adds:

* ``cdj_runnable``: a STORED generated column, 1 while the execution is runnable
  (pending or suspended), else NULL; the claim indexes lead with it and the claim's
  condition is ``cdj_runnable = 1`` (``store.vendor.MySQL.runnable``), so a claim
  reads the runnable rows in its ``ORDER BY`` order, never the finished history.
* ``cdj_open_dedupe``: the dedupe key while the execution is unfinished, else NULL,
  and a unique index on (task_name, cdj_open_dedupe): one unfinished execution per
  task and dedupe key (``cdj_exec_dedupe_uniq`` elsewhere). NULLs never collide.
* a unique index on (task_name, schedule_name, scheduled_for): one execution per
  schedule and fire time (``cdj_exec_fire_time_uniq``; executions of no schedule have
  NULLs, which never collide).
* an index on (task_name, status) for the running count of limited tasks.

Other databases: nothing. The generated columns are unknown to Django's models (no
model field reads or writes them). Adding them rebuilds the table once.
"""

from django.db import migrations

TABLE = "conductor_django_execution"

FORWARD = [
    f"ALTER TABLE {TABLE}"
    " ADD COLUMN cdj_runnable SMALLINT GENERATED ALWAYS AS"
    " (CASE WHEN status IN ('pending', 'suspended') THEN 1 END) STORED,"
    " ADD COLUMN cdj_open_dedupe VARCHAR(255) GENERATED ALWAYS AS"
    " (CASE WHEN status IN ('pending', 'running', 'suspended') THEN dedupe_key END) STORED",
    f"CREATE INDEX cdj_my_claim_idx ON {TABLE} (cdj_runnable, queue, priority DESC, run_at)",
    f"CREATE INDEX cdj_my_claim_any_idx ON {TABLE} (cdj_runnable, priority DESC, run_at)",
    f"CREATE UNIQUE INDEX cdj_my_dedupe_uniq ON {TABLE} (task_name, cdj_open_dedupe)",
    f"CREATE UNIQUE INDEX cdj_my_fire_time_uniq ON {TABLE}"
    " (task_name, schedule_name, scheduled_for)",
    f"CREATE INDEX cdj_my_task_status_idx ON {TABLE} (task_name, status)",
]

BACKWARD = [
    f"DROP INDEX cdj_my_task_status_idx ON {TABLE}",
    f"DROP INDEX cdj_my_fire_time_uniq ON {TABLE}",
    f"DROP INDEX cdj_my_dedupe_uniq ON {TABLE}",
    f"DROP INDEX cdj_my_claim_any_idx ON {TABLE}",
    f"DROP INDEX cdj_my_claim_idx ON {TABLE}",
    f"ALTER TABLE {TABLE} DROP COLUMN cdj_open_dedupe, DROP COLUMN cdj_runnable",
]


def _run(statements):
    def run(apps, schema_editor):
        if schema_editor.connection.vendor == "mysql":
            for sql in statements:
                schema_editor.execute(sql)
    return run


class Migration(migrations.Migration):
    dependencies = [("conductor_django", "0009_execution_lease")]

    operations = [migrations.RunPython(_run(FORWARD), _run(BACKWARD), atomic=False,
                                      elidable=False)]
