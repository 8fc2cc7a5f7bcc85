"""URLs of conductor_django: ``path("conductor/", include("conductor_django.urls"))``.

``metrics``: Prometheus metrics (docs/observability.md), for staff or a token.

Access: a logged-in active staff user (as the admin), or ``Authorization: Bearer <token>``
with ``CONDUCTOR["METRICS_TOKEN"]`` (no token set: staff only).
"""

from __future__ import annotations

import hmac

from django.http import HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.http import require_GET

from . import conf, metrics


def _token_ok(request: HttpRequest) -> bool:
    token = conf.get("METRICS_TOKEN")
    header = request.headers.get("Authorization", "")
    scheme, _, given = header.partition(" ")
    if not token or scheme.lower() != "bearer" or not given:
        return False
    return hmac.compare_digest(given.strip().encode(), str(token).encode())


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    user = getattr(request, "user", None)
    staff = user is not None and user.is_active and user.is_staff
    if not (staff or _token_ok(request)):
        if user is not None and user.is_authenticated:
            return HttpResponse("Forbidden: staff or the metrics token only.\n", status=403,
                                content_type="text/plain")
        response = HttpResponse("Authentication required: log in as staff or send "
                                "'Authorization: Bearer <METRICS_TOKEN>'.\n", status=401,
                                content_type="text/plain")
        response["WWW-Authenticate"] = 'Bearer realm="conductor metrics"'
        return response
    if not metrics.INSTALLED:
        return HttpResponse("prometheus_client is not installed: "
                            "pip install 'conductor-django[metrics]'\n", status=501,
                            content_type="text/plain")
    body, content_type = metrics.exposition()
    return HttpResponse(body, content_type=content_type)


app_name = "conductor_django"
urlpatterns = [path("metrics", metrics_view, name="metrics")]
