from django.db import models


class Order(models.Model):
    """An order row written by the ``place-order`` task's atomic step: exactly once."""

    number = models.CharField(max_length=40, unique=True)
    customer = models.CharField(max_length=200)
    total = models.DecimalField(max_digits=10, decimal_places=2)
    execution_id = models.UUIDField(help_text="The execution whose atomic step created it.")
    created_at = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.number
