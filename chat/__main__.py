import os
import signal
import sys

# Until ctrl_c.debounce() below, a Ctrl-C ends the start quietly with 130
# (EXIT_INTERRUPTED, not imported yet): a KeyboardInterrupt would print a
# traceback from whichever import it landed in.
signal.signal(signal.SIGINT, lambda signum, frame: sys.exit(130))

# pydantic looks for plugins in every installed package's entry points the
# first time a model is made: tens of milliseconds of each server's start,
# for plugins the runtime never has.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

from chat import ctrl_c, phases  # noqa: E402 (after the Ctrl-C handler)
from chat.errors import EXIT_INTERRUPTED  # noqa: E402
from payload.quantize import COMMAND as QUANTIZE  # noqa: E402

phases.mark(phases.PYTHON_UP)
ctrl_c.debounce()

if sys.argv[1:2] == [QUANTIZE]:  # the packer's `build --quant`, run inside this runtime
    from chat.quantize import main as quantize_main

    sys.exit(quantize_main(sys.argv[2:]))

try:
    from chat.cli import main
except KeyboardInterrupt:  # Ctrl-C while the modules still load: main() is not there yet to say 130
    sys.exit(EXIT_INTERRUPTED)

status = main()
# The work is over: a Ctrl-C now would only print a traceback from the
# interpreter's shutdown.
signal.signal(signal.SIGINT, signal.SIG_IGN)
sys.exit(status)
