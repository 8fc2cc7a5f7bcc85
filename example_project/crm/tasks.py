"""Tasks started by saving a Customer (model triggers) and by an event."""

from datetime import timedelta

from conductor_django import Retention, emit, task


@task(
    name="welcome-customer",
    on_model=("crm.Customer", "create"),
    fields=["name", "email"],
    retention=Retention(completed=timedelta(days=7), failed=timedelta(days=30)),
)
def welcome_customer(event, ctx):
    """Runs after the transaction that created the customer commits."""
    new = event.payload["new"]
    ctx.logger.info("welcoming customer %s <%s>", new["name"], new["email"])
    sent = ctx.step("send-welcome", lambda: ctx.mailer.send(new["email"], "Welcome!"))
    ctx.logger.info("welcome mail sent to %s", sent["to"])
    return sent


@task(name="plan-changed", on_model=("crm.Customer", "update"), fields=["plan"])
def plan_changed(event, ctx):
    """Only a change of ``plan`` starts it; editing the notes does not."""
    old, new = event.payload["old"]["plan"], event.payload["new"]["plan"]
    ctx.logger.info("customer %s: plan %s -> %s", event.payload["pk"], old, new)
    if new == "pro":
        emit("customer.upgraded", {"pk": event.payload["pk"]})
    return {"old": old, "new": new}


@task(name="thank-for-upgrade", events=["customer.upgraded"])
def thank_for_upgrade(event, ctx):
    from .models import Customer

    customer = Customer.objects.get(pk=event.payload["pk"])
    ctx.logger.info("thanking %s for upgrading", customer.name)
    return ctx.mailer.send(customer.email, "Thanks for upgrading")
