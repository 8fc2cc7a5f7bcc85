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
