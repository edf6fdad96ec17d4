#!/usr/bin/env python
import atexit
import gc
import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    # At exit Python collects every cycle of Django's, pydantic's and the project's objects
    # one by one: 0.2 s after a command is done. Frozen objects are skipped (files and
    # connections are closed by the commands themselves); registered first, so run last.
    atexit.register(gc.freeze)
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
