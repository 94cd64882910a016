"""Training progress: a per-batch bar with an ETA on terminals, plain lines elsewhere.

On a terminal (stderr is a tty) a tqdm bar moves at every batch; log lines are
printed above it (tqdm's logging redirection), never onto it. When the output goes
to a file or a pipe (batch jobs), a line is written at the end of every epoch and,
within long epochs, at least every ``LINE_INTERVAL`` seconds.
"""

import contextlib
import logging
import sys
import time
from collections.abc import Callable, Iterator

LOG = logging.getLogger("alchem")

# seconds: the longest a batch job's log stays silent during an epoch
LINE_INTERVAL = 30.0


def format_duration(seconds: float) -> str:
    """1h02m, 3m05s, 12.3 s."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, seconds = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class TrainingProgress:
    """Progress of the epochs ``first_epoch .. last_epoch`` of ``n_batches`` each.

    ``terminal`` (default: whether stderr is a tty) chooses the bar or plain lines;
    ``clock`` is the time source (seconds).
    """

    def __init__(
        self,
        first_epoch: int,
        last_epoch: int,
        n_batches: int,
        terminal: bool | None = None,
        clock: Callable[[], float] = time.perf_counter,
        first_batch: int = 0,
    ):
        self.first_epoch = first_epoch
        self.last_epoch = last_epoch
        self.n_batches = n_batches
        self.terminal = sys.stderr.isatty() if terminal is None else terminal
        self.clock = clock
        self.started = clock()
        self.last_line = self.started
        # batches of the run still to do when it started (a restart may begin
        # mid-epoch, after first_batch batches)
        self.total = max(last_epoch - first_epoch + 1, 0) * n_batches - first_batch
        self.done = 0
        self.bar = None
        if self.terminal and self.total > 0:
            from tqdm import tqdm

            self.bar = tqdm(
                total=self.total,
                file=sys.stderr,
                dynamic_ncols=True,
                unit="batch",
                leave=False,
                # a batch takes long enough for a redraw after each one
                mininterval=0,
                miniters=1,
                bar_format="{desc} {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} "
                "batches [{elapsed}, ETA {remaining}{postfix}]",
            )

    @contextlib.contextmanager
    def logging_above(self) -> Iterator[None]:
        """Inside: log lines of the "alchem" logger go above the bar."""
        if self.bar is None:
            yield
            return
        from tqdm.contrib.logging import logging_redirect_tqdm

        with logging_redirect_tqdm(loggers=[LOG]):
            yield

    def eta(self) -> float:
        """Seconds left to the last epoch at the mean rate so far."""
        if self.done == 0:
            return float("nan")
        rate = (self.clock() - self.started) / self.done
        return rate * (self.total - self.done)

    def batch(self, epoch: int, index: int, loss: float) -> None:
        """Batch ``index`` (0-based) of ``epoch`` is done, with this training loss."""
        self.done += 1
        if self.bar is not None:
            self.bar.set_description_str(
                f"epoch {epoch}/{self.last_epoch}", refresh=False
            )
            self.bar.set_postfix_str(f"loss {loss:.3e}", refresh=False)
            self.bar.update(1)
            return
        now = self.clock()
        if now - self.last_line >= LINE_INTERVAL and index + 1 < self.n_batches:
            self.last_line = now
            LOG.info(
                "epoch %d/%d: batch %d/%d, loss %.4e, elapsed %s, ETA %s",
                epoch,
                self.last_epoch,
                index + 1,
                self.n_batches,
                loss,
                format_duration(now - self.started),
                format_duration(self.eta()),
            )

    def epoch(
        self, epoch: int, train_loss: float, validation_loss: float, logged: bool
    ) -> None:
        """The epoch is done; ``logged``: its detailed line was already printed."""
        if self.bar is not None or logged:
            self.last_line = self.clock()
            return
        self.last_line = self.clock()
        LOG.info(
            "epoch %d/%d: loss %.4e / %.4e (train / validation), elapsed %s, ETA %s",
            epoch,
            self.last_epoch,
            train_loss,
            validation_loss,
            format_duration(self.last_line - self.started),
            format_duration(self.eta()),
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
