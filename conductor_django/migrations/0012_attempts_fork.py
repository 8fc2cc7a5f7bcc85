import django.db.models.deletion
import django.utils.timezone
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("conductor_django", "0011_signals_progress"),
    ]

    operations = [
        migrations.AddField(
            model_name="execution",
            name="forked_from",
            field=models.ForeignKey(
                blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL,
                related_name="forks", to="conductor_django.execution",
                help_text="The execution this one was forked from (conductor.fork).",
            ),
        ),
        migrations.CreateModel(
            name="Attempt",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True,
                                           serialize=False, verbose_name="ID")),
                ("number", models.PositiveIntegerField()),
                ("worker", models.UUIDField(blank=True, null=True)),
                ("started_at", models.DateTimeField(blank=True, null=True)),
                ("finished_at", models.DateTimeField(default=django.utils.timezone.now)),
                ("ended", models.CharField(max_length=10, choices=[
                    ("completed", "completed"), ("failed", "failed"),
                    ("retrying", "failed, retried later"), ("timed_out", "timed out"),
                    ("cancelled", "cancelled"), ("recovered", "recovered after a crash"),
                    ("released", "released at shutdown"),
                    ("retried", "retried by an operator")])),
                ("error", models.TextField(blank=True, default="")),
                ("retried_by", models.CharField(blank=True, default="", max_length=150,
                                        help_text="Who retried it (an operator's retry).")),
                ("from_step", models.CharField(blank=True, default="", max_length=255)),
                ("execution", models.ForeignKey(
                    db_index=False, on_delete=django.db.models.deletion.CASCADE,
                    related_name="attempt_rows", to="conductor_django.execution")),
            ],
            options={
                "ordering": ["id"],
                "indexes": [models.Index(fields=["execution", "id"],
                                         name="cdj_attempt_exec_idx")],
            },
        ),
    ]
