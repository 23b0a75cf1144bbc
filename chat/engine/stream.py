"""Turning generated token bytes into safe text.

Two things can make a naive token-by-token print wrong: a UTF-8 character
split across tokens (printed as garbage), and a stop string split across
tokens (half of it printed before it is recognised). `TextStream` holds back
exactly as much as either needs, and no more.
"""

from __future__ import annotations

import codecs


class TextStream:
    def __init__(self, stop: tuple[str, ...]) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stop = tuple(s for s in stop if s)
        self._pending = ""  # decoded text not yet released, for stop matching
        self.stopped = False

    def feed(self, data: bytes) -> str:
        """Add one token's bytes; return the text that is now safe to show."""
        if self.stopped:
            return ""
        text = self._decoder.decode(data)
        if not self._stop:  # nothing to hold back but a split character, which the decoder keeps
            return text
        self._pending += text
        return self._release(final=False)

    def finish(self) -> str:
        """End of generation: release whatever is held back (minus a stop)."""
        if self.stopped:
            return ""
        self._pending += self._decoder.decode(b"", final=True)
        return self._release(final=True)

    def _release(self, final: bool) -> str:
        cut = self._first_stop()
        if cut is not None:
            self.stopped = True
            out, self._pending = self._pending[:cut], ""
            return out
        keep = 0 if final else self._partial_stop_len()
        split = len(self._pending) - keep
        out, self._pending = self._pending[:split], self._pending[split:]
        return out

    def _first_stop(self) -> int | None:
        hits = [i for i in (self._pending.find(s) for s in self._stop) if i >= 0]
        return min(hits) if hits else None

    def _partial_stop_len(self) -> int:
        """Length of the longest tail of pending text that begins a stop string."""
        best = 0
        for stop in self._stop:
            for n in range(min(len(stop) - 1, len(self._pending)), best, -1):
                if self._pending.endswith(stop[:n]):
                    best = n
                    break
        return best
