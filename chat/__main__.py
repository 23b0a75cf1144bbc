import sys

from chat.errors import EXIT_INTERRUPTED

try:
    from chat.cli import main
except KeyboardInterrupt:  # Ctrl-C while the modules still load: main() is not there yet to say 130
    sys.exit(EXIT_INTERRUPTED)

sys.exit(main())
