from django.contrib import admin

from .models import Order


@admin.register(Order)
class OrderAdmin(admin.ModelAdmin):
    list_display = ("number", "customer", "total", "execution_id", "created_at")
    search_fields = ("number", "customer")
