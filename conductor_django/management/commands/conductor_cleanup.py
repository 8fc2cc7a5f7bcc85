from django.core.management.base import BaseCommand, CommandError

from conductor_django.retention import cleanup


class Command(BaseCommand):
    help = ("Delete finished executions older than their retention (task(retention=...) or "
            "CONDUCTOR['RETENTION']), in batches.")

    def add_arguments(self, parser):
        parser.add_argument("--dry-run", action="store_true",
                            help="Only count what would be deleted.")
        parser.add_argument("--batch-size", type=int, default=None,
                            help="Executions deleted per transaction (default: "
                                 "CLEANUP_BATCH_SIZE).")

    def handle(self, *args, dry_run, batch_size, verbosity, **options):
        if batch_size is not None and batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        result = cleanup(dry_run=dry_run, batch_size=batch_size)
        verb = "Would delete" if dry_run else "Deleted"
        kinds = result.by_kind()
        self.stdout.write(f"{verb} {result.total} executions ({kinds['completed']} completed, "
                          f"{kinds['failed']} failed or cancelled).")
        if verbosity >= 2:
            for (task, kind), n in sorted(result.deleted.items()):
                label = "default retention" if task == "*" else f"task {task}"
                self.stdout.write(f"  {label}: {n} {kind}")
