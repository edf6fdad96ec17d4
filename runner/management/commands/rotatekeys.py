"""`manage.py rotatekeys`: re-encrypt every stored API key with the first FIELD_ENCRYPTION_KEY.

After putting a new key first in FIELD_ENCRYPTION_KEY (old keys after it), run this;
then the old keys can be removed. Exit status 1 when a stored key could not be read.
"""

import sys

from django.core.management.base import BaseCommand
from django.db import transaction

from runner.models import Provider
from runner.models.crypto import rotate


class Command(BaseCommand):
    help = "Re-encrypt every provider's API key with the first key of FIELD_ENCRYPTION_KEY."

    def handle(self, *args, **opts):
        done, unreadable = 0, []
        with transaction.atomic():
            for provider in Provider.objects.exclude(api_key_encrypted="").select_for_update():
                try:
                    provider.api_key_encrypted = rotate(provider.api_key_encrypted)
                except ValueError:
                    unreadable.append(provider.name)
                    continue
                provider.save(update_fields=["api_key_encrypted"])
                done += 1
        self.stderr.write(f"Re-encrypted {done} API key(s) with the first FIELD_ENCRYPTION_KEY.")
        if unreadable:
            self.stderr.write(
                f"{len(unreadable)} could not be read with any key (enter them again on the "
                f"providers page): {', '.join(unreadable)}"
            )
            sys.exit(1)
