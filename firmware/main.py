"""Board entry: serve the binary protocol on USB-CDC until EXIT, then the REPL returns.

stdin is polled with a timeout so the command loop can feed the watchdog while the host
is silent; reads are one byte at a time because the board's stdin blocks until a
buffer is full.
"""

import select
import sys

import app


class _PolledStdin:
    def __init__(self):
        self.src = sys.stdin.buffer
        self.poll = select.poll()
        self.poll.register(sys.stdin, select.POLLIN)

    def readinto(self, buf):
        if not self.poll.poll(1000):
            return None
        return self.src.readinto(buf)


app.run(_PolledStdin(), sys.stdout.buffer)
