"""An async view that starts an execution and awaits its result (docs/async.md)."""

import json

from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

import conductor_django as conductor
from conductor_django import ExecutionFailed


@csrf_exempt
@require_POST
async def quote(request: HttpRequest) -> JsonResponse:
    """POST {"customer": ..., "basket": {"tea": 2}}: the priced quote, or 202 with the
    execution id if it takes longer than a few seconds (poll it, or the admin shows it)."""
    try:
        order = json.loads(request.body)
        payload = {"customer": str(order["customer"]),
                   "basket": {str(k): int(v) for k, v in dict(order["basket"]).items()}}
    except (ValueError, KeyError, TypeError, AttributeError):
        return JsonResponse({"error": "expected {customer, basket: {item: count}}"},
                            status=400)
    eid = await conductor.ainvoke("price-quote", payload)
    try:
        result = await conductor.await_result(eid, timeout=5)
    except TimeoutError:
        return JsonResponse({"execution": eid, "status": "running"}, status=202)
    except ExecutionFailed as exc:
        return JsonResponse({"execution": eid, "error": str(exc)}, status=502)
    return JsonResponse({"execution": eid, **result})
