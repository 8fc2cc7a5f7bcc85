"""The admin and the metrics URL, for the benchmarks that read them (bulk_cancel, scale)."""

from django.contrib import admin
from django.urls import include, path

urlpatterns = [path("admin/", admin.site.urls),
               path("conductor/", include("conductor_django.urls"))]
