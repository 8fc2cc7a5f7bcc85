from django.db import models


class Mark(models.Model):
    """A side effect a task leaves, so tests can count what ran and when."""

    key = models.CharField(max_length=200, db_index=True)
    value = models.CharField(max_length=200, blank=True, default="")
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"{self.key}={self.value}"

    @classmethod
    def add(cls, key: str, value: str = "") -> None:
        cls.objects.create(key=key, value=value)

    @classmethod
    def count(cls, key: str) -> int:
        return cls.objects.filter(key=key).count()


class Gauge(models.Model):
    """How many handlers of a key run right now, and the most that ever ran at once."""

    key = models.CharField(max_length=200, unique=True)
    current = models.IntegerField(default=0)
    peak = models.IntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.key}: {self.current} (peak {self.peak})"

    @classmethod
    def enter(cls, key: str) -> None:
        """One more running; both columns move in one statement. ``peak`` comes first:
        MySQL assigns left to right, each expression seeing the columns set before it."""
        cls.objects.get_or_create(key=key)
        cls.objects.filter(key=key).update(
            peak=models.Case(
                models.When(peak__gt=models.F("current"), then=models.F("peak")),
                default=models.F("current") + 1,
            ),
            current=models.F("current") + 1,
        )

    @classmethod
    def leave(cls, key: str) -> None:
        cls.objects.filter(key=key).update(current=models.F("current") - 1)

    @classmethod
    def peak_of(cls, key: str) -> int:
        return cls.objects.filter(key=key).values_list("peak", flat=True).first() or 0


class Article(models.Model):
    """Saved, updated and deleted by the model-trigger tests (tasks in event_tasks.py)."""

    title = models.CharField(max_length=200)
    body = models.TextField(blank=True, default="")
    price = models.DecimalField(max_digits=8, decimal_places=2, default=0)

    def __str__(self) -> str:
        return self.title


class FeaturedArticle(Article):
    """A proxy: its saves start the triggers of ``Article``."""

    class Meta:
        proxy = True


class ChaosOrder(models.Model):
    """Created by the atomic step of the chaos tests: one row per execution, exactly once.

    Deliberately not unique on ``execution_id``, so that a double write shows as two rows.
    """

    execution_id = models.CharField(max_length=36, db_index=True)
    attempt = models.PositiveIntegerField()
    created = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return f"order of {self.execution_id} (attempt {self.attempt})"
