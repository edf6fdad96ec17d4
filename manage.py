#!/usr/bin/env python
import atexit
import gc
import os
import sys


def main():
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    # Start-up makes hundreds of thousands of objects that live as long as the command and
    # no garbage: the collector is off while Django loads, then what it loaded is frozen
    # out of its way. At exit Python would collect every cycle one by one (0.2 s after a
    # command is done): frozen objects are skipped (files and connections are closed by
    # the commands themselves); registered first, so it runs last.
    gc.disable()
    atexit.register(gc.freeze)
    import django
    from django.core.management import execute_from_command_line

    django.setup()
    gc.freeze()
    gc.enable()
    execute_from_command_line(sys.argv)


if __name__ == "__main__":
    main()
