from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("conductor_django", "0009_execution_lease"),
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
    ]
