"""Where a start's time goes, on the machine at hand.

With LLAMABIN_TRACE_START set to the moment the file was launched (seconds
since the epoch, as the launcher read its clock just before), each phase of
the start prints `start-trace SECONDS PHASE` on stderr when it is reached.
bench/startup.py reads these lines to split a start into the bootloader and
interpreter, the imports and the load, and to compare two machines or two
builds. Without the variable nothing is printed, and each mark costs one
lookup in the environment.
"""

from __future__ import annotations

import os
import time

TRACE_VAR = "LLAMABIN_TRACE_START"
PREFIX = "start-trace"

# The phases in the order a start reaches them (the load runs in its own
# thread, beside the front end's imports, so the two series interleave).
PYTHON_UP = "python up"
COMMAND_LINE = "command line read"
LOAD_BEGINS = "load begins"
MODEL_LOADED = "model loaded"
ENGINE_READY = "engine ready"
FRONT_END_IMPORTED = "front end imported"
SERVING = "serving"
ANSWERED = "answered"


def mark(phase: str) -> None:
    origin = os.environ.get(TRACE_VAR)
    if not origin:
        return
    try:
        elapsed = time.time() - float(origin)
    except ValueError:
        return
    os.write(2, f"{PREFIX} {elapsed:.4f} {phase}\n".encode())
