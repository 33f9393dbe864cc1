"""The failure policy: mltrail's own errors never break training.

Internal errors become one warning per kind, counted for the end of the run. In strict mode
(``MLTRAIL_STRICT=1``, on in the test suite) they are re-raised so that tests see them.
Misuse by the caller raises :class:`MltrailError` with a message that says what to do.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import logging
import threading
import warnings
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from mltrail.flags import env_flag
from mltrail.recording.sanitize import redact_text

logger = logging.getLogger("mltrail")
F = TypeVar("F", bound=Callable[..., Any])


class MltrailError(Exception):
    """A problem the user can fix: bad input, an unknown run id, a misconfigured store."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` Did you mean 'x'?`` for the known name closest to a mistyped one, else ""."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


def reject_unknown(names: Iterable[str], known: Collection[str], message: str) -> None:
    """Raise for the first of ``names`` not in ``known``.

    Args:
        names: the names given.
        known: the valid names.
        message: the error's text, with ``{name}`` (quoted), ``{hint}`` (a close match, as
            :func:`did_you_mean` words it) and ``{known}`` (every valid name) to fill in.

    Raises:
        MltrailError: with ``message`` filled in.
    """
    for name in names:
        if name not in known:
            hint, valid = did_you_mean(name, known), ", ".join(sorted(known))
            raise MltrailError(message.format(name=repr(name), hint=hint, known=valid))


class MltrailWarning(UserWarning):
    """Something went wrong inside mltrail; training went on."""


def strict_mode() -> bool:
    """True when ``MLTRAIL_STRICT`` asks for internal errors to be raised (test mode)."""
    return env_flag("MLTRAIL_STRICT")


class ErrorCounter:
    """Counts internal errors by kind and warns once per kind."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def report(self, kind: str, error: BaseException) -> None:
        with self._lock:
            self.counts[kind] += 1
            first = self.counts[kind] == 1
        message = redact_text(
            f"mltrail: {kind} failed ({type(error).__name__}: {error}){storage_hint(error)}"
        )
        if first:
            text = message + "; training continues, later errors of this kind are counted."
            try:
                warnings.warn(text, MltrailWarning, stacklevel=3)
            except Exception:
                # Warnings turned into errors (-W error) must not break training either.
                logger.warning(text)
        logger.debug(message, exc_info=(type(error), error, error.__traceback__))

    def add(self, counts: Mapping[str, int]) -> None:
        """Count errors reported (and warned about) elsewhere, without warning again."""
        with self._lock:
            self.counts.update(counts)

    def total(self) -> int:
        return sum(self.counts.values())


# Object-store (S3) error codes and messages -> what the user fixes. Matched in the text, since
# boto3 wraps a failed transfer's ClientError into an S3UploadFailedError that only quotes it.
_STORAGE_HINTS = (
    (
        ("InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
         "TokenRefreshRequired", "RequestExpired", "Unable to locate credentials",
         "Partial credentials"),
        "the object store refused the credentials: set AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary ones), or AWS_PROFILE and "
        "~/.aws/credentials, to a valid key (with --artifacts-destination, the tracking "
        "server's)",
    ),
    (
        ("AccessDenied",),
        "the object store's credentials may not write there: grant the key s3:PutObject on the "
        "bucket, or use another key",
    ),
    (
        ("NoSuchBucket",),
        "the bucket does not exist: create it, or point the experiment's artifact location "
        "(the server's --default-artifact-root or --artifacts-destination) at one that does",
    ),
    (
        ("Could not connect to the endpoint URL", "Read timeout on endpoint URL",
         "Connect timeout on endpoint URL"),
        "the object store is unreachable: check MLFLOW_S3_ENDPOINT_URL and the network",
    ),
)  # fmt: skip


def storage_hint(error: BaseException) -> str:
    """``"; <what to fix>; ..."`` for an object-store (S3) error, else ``""``."""
    text = f"{type(error).__name__}: {error}"
    for needles, hint in _STORAGE_HINTS:
        if any(needle in text for needle in needles):
            return f"; {hint}; what was not uploaded is journaled, `mltrail sync` sends it"
    return ""


#: Process-wide counter for errors that happen outside any run (autolog patches, plugin).
process_errors = ErrorCounter()


@contextlib.contextmanager
def guarded(kind: str, counter: ErrorCounter | None = None) -> Iterator[None]:
    """Run a block of mltrail code; turn its errors into a counted warning (or raise if strict)."""
    try:
        yield
    except MltrailError:
        raise
    except Exception as error:
        if strict_mode():
            raise
        (counter or process_errors).report(kind, error)


def guard(kind: str) -> Callable[[F], F]:
    """Decorator form of :func:`guarded` for methods of objects with an ``_errors`` counter."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            counter = getattr(args[0], "_errors", None) if args else None
            with guarded(kind, counter):
                return func(*args, **kwargs)
            return None

        return wrapper  # type: ignore[return-value]

    return decorate
