"""PostgreSQL only: NOTIFY ``conductor_done`` (payload: the execution id) when an
execution finishes, so that ``await conductor.await_result(...)`` wakes at once instead
of polling. A per-row trigger whose ``WHEN`` is checked without calling the function:
updates that do not finish an execution cost nothing more. Other databases poll.
"""

from django.db import migrations

TABLE = "conductor_django_execution"

FORWARD = f"""
CREATE OR REPLACE FUNCTION conductor_django_notify_finished() RETURNS trigger AS $$
BEGIN
    PERFORM pg_notify('conductor_done', NEW.id::text);
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER conductor_django_execution_finished
    AFTER UPDATE OF status ON {TABLE}
    FOR EACH ROW
    WHEN (NEW.status IN ('completed', 'failed', 'cancelled')
          AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION conductor_django_notify_finished();
"""

BACKWARD = f"""
DROP TRIGGER IF EXISTS conductor_django_execution_finished ON {TABLE};
DROP FUNCTION IF EXISTS conductor_django_notify_finished();
"""


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD)


class Migration(migrations.Migration):
    dependencies = [("conductor_django", "0015_admin_dashboard")]

    operations = [migrations.RunPython(forward, backward, elidable=False)]
