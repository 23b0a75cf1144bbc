import os
import sys

# pydantic looks for plugins in every installed package's entry points the
# first time a model is made: tens of milliseconds of each server's start,
# for plugins the runtime never has.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

from chat import phases
from chat.errors import EXIT_INTERRUPTED
from payload.quantize import COMMAND as QUANTIZE

phases.mark(phases.PYTHON_UP)

if sys.argv[1:2] == [QUANTIZE]:  # the packer's `build --quant`, run inside this runtime
    from chat.quantize import main as quantize_main

    sys.exit(quantize_main(sys.argv[2:]))

try:
    from chat.cli import main
except KeyboardInterrupt:  # Ctrl-C while the modules still load: main() is not there yet to say 130
    sys.exit(EXIT_INTERRUPTED)

sys.exit(main())
