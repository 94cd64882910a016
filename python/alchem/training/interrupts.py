"""SIGINT (Ctrl-C) and SIGTERM (batch schedulers at their time limit) during training.

The first signal is only recorded: the training loop finishes the batch it is in,
saves its state and stops (alchem.training). A second signal stops at once, as the
default handlers would.
"""

import contextlib
import signal
import sys
from collections.abc import Iterator

# exit status of a process stopped by these signals, as shells report it (128 + n)
EXIT_STATUS = {signal.SIGINT: 130, signal.SIGTERM: 143}


class StopRequests:
    """Which signal asked the training to stop, if any."""

    def __init__(self) -> None:
        self.received: int | None = None

    def handle(self, number: int, frame) -> None:
        if self.received is not None:  # asked twice: stop now
            if number == signal.SIGINT:
                raise KeyboardInterrupt
            sys.exit(EXIT_STATUS.get(number, 128 + number))
        self.received = number

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name if self.received else ""


@contextlib.contextmanager
def stop_requests() -> Iterator[StopRequests]:
    """Record SIGINT and SIGTERM instead of stopping, inside the block (main thread)."""
    requests = StopRequests()
    previous = {}
    try:
        for number in EXIT_STATUS:
            previous[number] = signal.signal(number, requests.handle)
    except ValueError:  # not the main thread: leave the default behaviour
        pass
    try:
        yield requests
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


class TrainingInterrupted(Exception):
    """Training stopped on a signal after saving its state.

    ``model`` is the best model so far (None before the first epoch ended),
    ``checkpoint`` the file to restart from.
    """

    def __init__(self, number: int, checkpoint: str, model, best_epoch: int):
        super().__init__(signal.Signals(number).name)
        self.number = number
        self.checkpoint = checkpoint
        self.model = model
        self.best_epoch = best_epoch

    @property
    def exit_status(self) -> int:
        return EXIT_STATUS.get(self.number, 128 + self.number)
