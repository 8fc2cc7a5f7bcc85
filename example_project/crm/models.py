from django.db import models


class Customer(models.Model):
    """Saving one starts conductor tasks (see tasks.py): a model trigger."""

    class Plan(models.TextChoices):
        FREE = "free", "Free"
        PRO = "pro", "Pro"

    name = models.CharField(max_length=200)
    email = models.EmailField()
    plan = models.CharField(max_length=10, choices=Plan.choices, default=Plan.FREE)
    notes = models.TextField(blank=True, default="")

    def __str__(self) -> str:
        return self.name
