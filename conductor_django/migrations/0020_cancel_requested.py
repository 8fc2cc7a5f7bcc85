"""``Execution.cancel_requested``: an operator's cancel is told apart from a failure.

Existing rows are marked where the database alone tells that a cancel took effect:

* status ``cancelled``, or ``cancelled`` set (a running execution asked to stop): only a
  cancel sets these;
* status ``failed`` without any attempt ever started (``attempts = 0`` and no
  ``started_at``): a worker fails an execution only after claiming it, so such a row was
  cancelled while pending.

Other failed rows are left alone: a cancel of a suspended execution (or of a retried one)
left only its reason in ``last_error``, and any text may be a reason, so a failure cannot
be told from such a cancel by its message.

The dashboard's index of finished rows (0015) gets the column, so that it still counts
from an index-only scan.
"""

from django.db import migrations, models
from django.db.models import Q


def mark_known_cancels(apps, schema_editor):
    Execution = apps.get_model("conductor_django", "Execution")
    db = schema_editor.connection.alias
    Execution.objects.using(db).filter(
        Q(status="cancelled") | Q(cancelled=True)
        | Q(status="failed", attempts=0, started_at__isnull=True)
    ).update(cancel_requested=True)


class Migration(migrations.Migration):
    dependencies = [
        ("conductor_django", "0019_lean_hot_path_indexes"),
    ]

    operations = [
        migrations.AddField(
            model_name="execution",
            name="cancel_requested",
            field=models.BooleanField(
                db_default=False, default=False,
                help_text="An operator's cancel took effect: a pending or suspended "
                "execution ended failed because of it, a running one was asked to stop "
                "(then it ends cancelled).",
            ),
        ),
        # The dashboard counts cancels apart from failures from an index-only scan.
        migrations.RemoveIndex(model_name="execution", name="cdj_exec_finished_idx"),
        migrations.AddIndex(
            model_name="execution",
            index=models.Index(
                condition=Q(("status__in", ["completed", "failed", "cancelled"])),
                fields=["finished_at", "queue", "task_name", "status", "started_at",
                        "cancel_requested"],
                name="cdj_exec_finished_idx",
            ),
        ),
        migrations.RunPython(mark_known_cancels, migrations.RunPython.noop, elidable=True),
    ]
