"""PostgreSQL only: NOTIFY workers when executions become runnable (see notify.py).

Inserts announce their queues once per statement (a bulk insert is one NOTIFY per
queue); updates announce a row that becomes runnable now (a retry, a release, a
resumed parent). Other databases get nothing: their workers poll.
"""

from django.db import migrations

TABLE = "conductor_django_execution"

FORWARD = f"""
CREATE OR REPLACE FUNCTION conductor_django_notify_inserted() RETURNS trigger AS $$
DECLARE q text;
BEGIN
    FOR q IN SELECT DISTINCT queue FROM inserted_rows WHERE status = 'pending' LOOP
        PERFORM pg_notify('conductor_new', q);
    END LOOP;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER conductor_django_execution_inserted
    AFTER INSERT ON {TABLE}
    REFERENCING NEW TABLE AS inserted_rows
    FOR EACH STATEMENT EXECUTE FUNCTION conductor_django_notify_inserted();

CREATE OR REPLACE FUNCTION conductor_django_notify_runnable() RETURNS trigger AS $$
BEGIN
    IF NEW.run_at <= now() THEN
        PERFORM pg_notify('conductor_new', NEW.queue);
    END IF;
    RETURN NULL;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER conductor_django_execution_runnable
    AFTER UPDATE OF status, run_at ON {TABLE}
    FOR EACH ROW
    WHEN (NEW.status IN ('pending', 'suspended') AND NEW.run_at IS NOT NULL
          AND (OLD.status IS DISTINCT FROM NEW.status OR OLD.run_at IS DISTINCT FROM NEW.run_at))
    EXECUTE FUNCTION conductor_django_notify_runnable();
"""

BACKWARD = f"""
DROP TRIGGER IF EXISTS conductor_django_execution_runnable ON {TABLE};
DROP TRIGGER IF EXISTS conductor_django_execution_inserted ON {TABLE};
DROP FUNCTION IF EXISTS conductor_django_notify_runnable();
DROP FUNCTION IF EXISTS conductor_django_notify_inserted();
"""


def forward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(FORWARD)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(BACKWARD)


class Migration(migrations.Migration):
    dependencies = [("conductor_django", "0001_initial")]

    operations = [migrations.RunPython(forward, backward, elidable=False)]
