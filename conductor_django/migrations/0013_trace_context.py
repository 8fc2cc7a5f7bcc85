from django.db import migrations, models
from django.db.models import Q


class Migration(migrations.Migration):

    dependencies = [
        ("conductor_django", "0012_attempts_fork"),
    ]

    operations = [
        migrations.AddField(
            model_name="execution",
            name="trace_context",
            field=models.JSONField(
                blank=True,
                editable=False,
                help_text="The trace context (W3C traceparent) of the invoke() caller, so the "
                "execution's spans join the caller's trace.",
                null=True,
            ),
        ),
        # The metrics' gauges (metrics.py): an index-only scan of the unfinished rows.
        migrations.AddIndex(
            model_name="execution",
            index=models.Index(
                condition=Q(("status__in", ["pending", "running", "suspended"])),
                fields=["queue", "task_name", "status", "run_at"],
                name="cdj_exec_open_idx",
            ),
        ),
    ]
