"""The example project's tasks (the README's quickstart runs these)."""

import asyncio
from datetime import timedelta
from decimal import Decimal

from conductor_django import Batch, Cron, SignalTimeout, task

from . import mailer, quotes


@task(name="send-welcome-email", max_attempts=3)
def send_welcome_email(event, ctx):
    """The README's quickstart task: two memoized steps, never sent twice."""
    user = event.payload["user"]
    body = ctx.step("render", lambda: f"Welcome, {user}!")  # runs once, ever
    ctx.step("send", lambda: mailer.send(user, body))  # never sent twice
    return {"sent": True}


def render_section(n, signal):
    """Half a second of work, watching the signal: a cancel stops it at once.

    It raises (``raise_if_aborted``) rather than returning early: a step that returns
    after its execution was cancelled is not stored, and a step that raised runs again,
    whole, when the execution is retried.
    """
    for _ in range(5):
        signal.raise_if_aborted()
        signal.wait(0.1)
    signal.raise_if_aborted()
    return f"section {n}"


@task(name="long-report")
def long_report(event, ctx):
    """One step per section, long enough to be cancelled while it runs."""
    sections = event.payload.get("sections", 60)
    for n in range(sections):
        ctx.step(f"section-{n}", lambda n=n: render_section(n, ctx.signal))
    return {"sections": sections}


# --- durable execution: steps, a child invocation and a durable sleep (README) --------


@task(name="place-order", max_attempts=3)
def place_order(event, ctx):
    """The order row and the step record commit together (``atomic=True``), so a crash,
    a retry or a worker that lost its lease never creates the order twice."""
    from decimal import Decimal

    from .models import Order

    number = event.payload["number"]

    def create_order():
        order = Order.objects.create(number=number, customer=event.payload["customer"],
                                     total=Decimal(event.payload["total"]),
                                     execution_id=ctx.execution_id)
        return {"order_id": order.pk}

    created = ctx.step("create-order", create_order, atomic=True)
    ctx.step("send-confirmation", lambda: ctx.logger.info("order %s confirmed", number))
    return created



@task(name="charge-card", max_attempts=5)
def charge_card(event, ctx):
    """The payment, as its own execution: retried on its own, visible on its own."""
    order = event.payload["order"]
    charge = ctx.step("charge", lambda: {"order": order, "amount": event.payload["amount"],
                                         "charge_id": f"ch_{order}"})
    return charge["charge_id"]


@task(name="fulfil-order", max_attempts=3)
def fulfil_order(event, ctx):
    """Reserve, charge (a child execution), wait out the cooling-off period, ship.

    Every side effect is a step or a child, so a retry, a crash or a restart never
    reserves, charges or ships twice. While the child runs and while the cooling-off
    sleep lasts the execution is ``suspended`` and uses no worker.
    """
    order = event.payload["order"]
    ctx.step("reserve-stock", lambda: ctx.logger.info("reserving %s", order) or "reserved")
    charge_id = ctx.invoke("charge", "charge-card", {"order": order, "amount": 42},
                           timeout=3600)
    ctx.sleep("cooling-off", event.payload.get("cooling_off", 5))
    ctx.checkpoint()  # cancelled during the sleep? stop before shipping
    tracking = ctx.step("ship", lambda: f"track-{order}")
    return {"order": order, "charge": charge_id, "tracking": tracking}


# --- flow control (docs/flow-control.md) ------------------------------------------------


@task(name="sync-inventory", concurrency=2)
def sync_inventory(event, ctx):
    """At most two syncs at once across every worker (the supplier's API limit)."""
    return ctx.step("fetch", lambda: {"sku": event.payload["sku"], "stock": 7})


@task(name="nightly-reindex", window=("22:00", "06:00"))
def nightly_reindex(event, ctx):
    """Runs only at night (TIME_ZONE); a run still going at 06:00 pauses until 22:00."""
    for n in range(event.payload.get("shards", 4)):
        ctx.step(f"shard-{n}", lambda n=n: f"reindexed shard {n}")
    return "reindexed"


@task(name="send-push", batch=Batch(size=50, timeout=2.0))
def send_push(events, ctx):
    """One call to the push provider for up to 50 notifications."""
    return [{"sent_to": e.payload["user"]} for e in events]


# --- scheduling -------------------------------------------------------------------------


@task(name="daily-digest", invocable=False,
      cron=[Cron("0 8 * * *", name="morning", payload={"edition": "morning"}),
            Cron("0 18 * * 1-5", name="evening", payload={"edition": "evening"})])
def daily_digest(event, ctx):
    """Static schedules: written to the Schedule table when a worker starts."""
    edition = event.payload["edition"]  # event.name is the schedule's name
    ctx.step("compose", lambda: ctx.logger.info("composing the %s digest", edition))
    return {"schedule": event.name, "edition": edition}


@task(name="trial-reminder", invocable=False)
def trial_reminder(event, ctx):
    ctx.step("remind", lambda: ctx.logger.info("reminding user %s", event.payload["user"]))
    return {"reminded": event.payload["user"]}


@task(name="start-trial")
def start_trial(event, ctx):
    """Creates a dynamic schedule: a reminder every morning while the trial runs."""
    user = event.payload["user"]
    cron = event.payload.get("cron", "0 10 * * *")
    ctx.schedule("trial-reminder", f"trial-{user}", cron, payload={"user": user})
    return {"scheduled": f"trial-{user}", "cron": cron}


@task(name="end-trial")
def end_trial(event, ctx):
    """Removes it again; its queued reminder is cancelled."""
    return {"removed": ctx.unschedule("trial-reminder", f"trial-{event.payload['user']}")}


# --- human in the loop: an approval in the admin (docs/signals.md) ------------------------


@task(name="approve-refund", max_attempts=3)
def approve_refund(event, ctx):
    """A refund waits for a person: an admin user with the "Can send signals to
    executions" permission clicks approve or reject on the execution page (or, from the
    shell, ``conductor.send_signal(eid, "approval", "approve", sent_by="me")``). No
    answer within 3 days rejects it. While it waits the execution is ``suspended`` and
    holds no worker; a restart or a crash of the workers changes nothing.
    """
    order, amount = event.payload["order"], event.payload["amount"]
    ctx.progress(1, 4, f"waiting for approval: refund {amount} of order {order}")
    try:
        decision = ctx.wait_for_signal("approval", timeout=timedelta(days=3),
                                       choices=["approve", "reject"])
    except SignalTimeout:
        decision = "expired"
    if decision != "approve":
        ctx.step("tell-customer", lambda: ctx.logger.info("refund of %s: %s", order, decision))
        ctx.progress(4, 4, f"not refunded ({decision})")
        return {"order": order, "refunded": False, "decision": decision}
    ctx.progress(2, 4, "refunding")
    refund_id = ctx.step("refund", lambda: f"re_{order}")  # the payment provider, once
    ctx.progress(3, 4, "telling the customer")
    ctx.step("tell-customer", lambda: ctx.logger.info("refunded %s: %s", order, refund_id))
    ctx.progress(4, 4, "refunded")
    return {"order": order, "refunded": True, "refund": refund_id}


# --- an async handler: HTTP-like calls awaited in steps (docs/async.md) -----------------


@task(name="price-quote", max_attempts=3, timeout=30)
async def price_quote(event, ctx):
    """Prices every item of the basket and the customer's discount with async calls, each
    in a step of its own (run side by side): a retry or a resume calls none of them again."""
    basket, customer = event.payload["basket"], event.payload["customer"]
    prices = await asyncio.gather(*(
        ctx.step(f"price-{item}", lambda item=item: quotes.fetch_price(item))
        for item in sorted(basket)))
    discount = await ctx.step("discount", lambda: quotes.fetch_discount(customer))
    total = sum(Decimal(p) * basket[item] for p, item in zip(prices, sorted(basket), strict=True))
    total = total * (100 - discount) / 100
    return {"customer": customer, "total": str(total.quantize(Decimal("0.01"))),
            "discount": discount}
