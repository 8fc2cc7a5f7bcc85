from django.db import migrations, models
from django.db.models import Q


class Migration(migrations.Migration):

    dependencies = [
        ("conductor_django", "0014_execution_key"),
    ]

    operations = [
        # The admin's dashboard: the executions finished in the last day by queue, task
        # and status, with their run time, from an index-only scan however big the table.
        migrations.AddIndex(
            model_name="execution",
            index=models.Index(
                condition=Q(("status__in", ["completed", "failed", "cancelled"])),
                fields=["finished_at", "queue", "task_name", "status", "started_at"],
                name="cdj_exec_finished_idx",
            ),
        ),
    ]
