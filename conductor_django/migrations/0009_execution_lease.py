from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("conductor_django", "0008_claim_and_lean_indexes"),
    ]

    operations = [
        migrations.AddField(
            model_name="execution",
            name="lease",
            field=models.PositiveBigIntegerField(
                default=0,
                db_default=0,
                help_text="Fencing token: every claim takes a new one, and every write of a "
                "running execution names it, so a worker that lost the execution can write "
                "nothing more.",
            ),
        ),
    ]
