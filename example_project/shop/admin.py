from django.contrib import admin, messages

import conductor_django as conductor

from .models import Order


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ("number", "customer", "total", "execution_id", "created_at")
    search_fields = ("number", "customer")
    actions = ["request_refund"]

    @admin.action(description="Request a refund (waits for approval)")
    def request_refund(self, request, queryset):
        """Starts one ``approve-refund`` execution per order; approve it on its page."""
        for order in queryset:
            eid = conductor.invoke("approve-refund", {"order": order.number,
                                                      "amount": str(order.total)})
            self.message_user(request, f"Refund of {order.number} waits for approval: "
                              f"execution {eid}", messages.SUCCESS)
