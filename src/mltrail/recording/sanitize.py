"""Make keys and values valid for MLflow, and keep secrets inside the process.

Everything mltrail writes (params, tags, metrics, artifacts, the spool, its own log lines)
passes through the functions here. Key sanitising is deterministic and collision-free;
the raw-to-logged map is kept so the writer can store it as an artifact.
"""

from __future__ import annotations

import hashlib
import itertools
import numbers
import os
import posixpath
import re
import threading
from collections.abc import Mapping
from typing import Any

# MLflow's limits (mlflow/utils/validation.py); the writer chunks requests by the batch limits.
MAX_KEY_LENGTH = 250
MAX_PARAM_VALUE_LENGTH = 6000
MAX_TAG_VALUE_LENGTH = 8000
TRUNCATION_MARKER = "...[truncated]"
REDACTED = "***"

_VALID_KEY = re.compile(r"^[/\w.\- ]*$")
_INVALID_CHAR = re.compile(r"[^/\w.\- ]")
# Readable replacements for characters users put in metric names (map@3, acc%, a:b, ...).
_READABLE = {"@": "_at_", "%": "_pct_", "#": "_num_", "+": "_plus_", "=": "_eq_"}

# --- secrets -----------------------------------------------------------------------------------

# Words that make a name secret-looking when they appear as a word of the name.
_SECRET_WORDS = {
    "password",
    "passwd",
    "pwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "credential",
    "credentials",
    "auth",
    "authorization",
    "cookie",
    "session",
    "sas",
}
# Pairs of adjacent words that are secret together but harmless apart ("key" alone is common).
_SECRET_PAIRS = {("api", "key"), ("access", "key"), ("private", "key"), ("secret", "key")}
# Tokenizer vocabulary, not credentials: pad_token="[PAD]" must keep its value.
_HARMLESS_NAME = re.compile(
    r"(^|_)(pad|eos|bos|cls|sep|unk|mask|start|end|max|min|num|n|special|additional_special)"
    r"_tokens?(_id|_ids)?$|tokeniz|(^|_)tokens?_(id|ids|count|len|length)$|^use_",
    re.IGNORECASE,
)
# Credentials written inside URLs: scheme://user:password@host -> scheme://user:***@host.
_URL_CREDENTIALS = re.compile(
    r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.\-]{0,30}://)(?P<userinfo>[^/\s@:]{0,256}(:[^/\s@]{0,256})?)@"
)
# Well-known token shapes, wherever they appear in text.
_TOKEN_SHAPES = re.compile(
    r"\b(ghp_[A-Za-z0-9]{20,}|gh[osur]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,}"
    r"|hf_[A-Za-z0-9]{20,}|sk-[A-Za-z0-9_\-]{20,}|xox[abprs]-[A-Za-z0-9\-]{10,}"
    r"|AKIA[0-9A-Z]{16}|glpat-[A-Za-z0-9_\-]{20,})\b"
)
# NAME=value / NAME: value lines (.env files, configs, log lines) whose NAME looks secret.
# "NAME==1.2" is a comparison, not an assignment: a pinned package (google-auth==2.63.0) keeps
# its version, so requirements files stay valid and comparable.
_ASSIGNMENT = re.compile(
    r"(?P<name>\b[A-Za-z_][A-Za-z0-9_.\-]{0,100})(?P<sep>\s*[:=]\s*)(?P<quote>[\"']?)"
    r"(?P<value>[^\s\"',;=][^\s\"',;]*)"
)

_known_secrets: set[str] = set()
_known_lock = threading.Lock()


def _words(name: str) -> list[str]:
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    return [w for w in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if w]


def is_secret_name(name: str) -> bool:
    """True when a param, tag or environment variable name looks like it holds a secret.

    Whole words count, so ``hf_token``, ``api_key`` and ``MLFLOW_TRACKING_PASSWORD`` are
    secret-looking while ``tokenizer``, ``pad_token`` and ``use_cls_token`` are not.
    """
    if _HARMLESS_NAME.search(name):
        return False
    words = _words(name)
    if any(w in _SECRET_WORDS for w in words):
        return True
    return any(pair in _SECRET_PAIRS for pair in itertools.pairwise(words))


def remember_secret(value: str) -> None:
    """Register a secret value so that it is redacted wherever it appears in later text."""
    if isinstance(value, str) and len(value) >= 4:
        with _known_lock:
            _known_secrets.add(value)


# The shell's working-directory variables match the word "pwd" but hold paths, not passwords;
# Jupyter's JPY_SESSION_NAME ("session") holds the notebook's path.
_NOT_SECRET_ENV = {"PWD", "OLDPWD", "JPY_SESSION_NAME"}


# The secret values of the environment, with the environment they were read from: redacting
# runs for every tag and text, and judging every variable's name each time cost milliseconds.
_env_cache: tuple[int, list[str]] = (0, [])


def _env_secrets() -> list[str]:
    global _env_cache
    # The undecoded mapping behind os.environ: hashing it is 30x cheaper than decoding every
    # variable, and this runs for every param and tag.
    raw = getattr(os.environ, "_data", None)
    key = hash(tuple((raw if isinstance(raw, dict) else os.environ).items()))
    if _env_cache[0] != key:
        found = [
            v
            for k, v in os.environ.items()
            if len(v) >= 4 and k not in _NOT_SECRET_ENV and is_secret_name(k)
        ]
        _env_cache = (key, found)
    return _env_cache[1]


def redact_text(text: str) -> str:
    """Remove credentials from free text: URLs, token shapes, secret assignments, known values."""
    if not text:
        return text
    text = _URL_CREDENTIALS.sub(_redact_userinfo, text)
    text = _TOKEN_SHAPES.sub(REDACTED, text)
    text = _ASSIGNMENT.sub(_redact_assignment, text)
    with _known_lock:
        known = sorted(_known_secrets, key=len, reverse=True)
    for secret in known + sorted(_env_secrets(), key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _redact_userinfo(match: re.Match[str]) -> str:
    userinfo = match.group("userinfo")
    user, has_password, _ = userinfo.partition(":")
    # A lone user part can be a token too (https://ghp_xxx@github.com): drop it unless it is short.
    if has_password:
        return f"{match.group('scheme')}{user}:{REDACTED}@"
    if len(user) > 20:
        return f"{match.group('scheme')}{REDACTED}@"
    return match.group(0)


def _redact_assignment(match: re.Match[str]) -> str:
    if not is_secret_name(match.group("name")) or match.group("value") == REDACTED:
        return match.group(0)
    value = match.group("value")
    if value.lower() in {"true", "false", "none", "null", "0", "1"}:
        return match.group(0)
    return f"{match.group('name')}{match.group('sep')}{match.group('quote')}{REDACTED}"


def redact_value(name: str, value: Any) -> Any:
    """Redact a param or tag value when its name looks secret; strip URL credentials always."""
    if isinstance(value, str):
        if is_secret_name(name) and value and value.lower() not in {"true", "false", "none"}:
            remember_secret(value)
            return REDACTED
        return redact_text(value)
    return value


# --- keys ---------------------------------------------------------------------------------------


def _short_hash(text: str, n: int = 8) -> str:
    return hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:n]


def _clean_key(raw: str) -> str:
    key = raw
    for char, word in _READABLE.items():
        key = key.replace(char, word)
    key = _INVALID_CHAR.sub("_", key)
    parts = [p for p in key.split("/") if p != ""]
    parts = ["_" if p in {".", ".."} else p for p in parts]
    key = "/".join(parts)
    if key.startswith("."):
        key = "_" + key
    return key or "_"


def is_valid_key(key: str) -> bool:
    """True when MLflow accepts ``key`` as a metric, param or tag name unchanged."""
    return (
        bool(key)
        and len(key) <= MAX_KEY_LENGTH
        and _VALID_KEY.match(key) is not None
        and posixpath.normpath(key) == key
        and not key.startswith(("/", "."))
    )


class KeySanitizer:
    """Maps raw keys to valid MLflow keys, deterministically and without collisions.

    A valid key is kept as is. Others get readable replacements (``@`` becomes ``_at_``);
    over-long keys keep a prefix and a hash of the whole key. Two raw keys never share a
    logged key: the second gets a hash suffix. ``changed`` holds every key that was rewritten.
    """

    def __init__(self) -> None:
        self._to_logged: dict[str, str] = {}
        self._to_raw: dict[str, str] = {}
        self.changed: dict[str, str] = {}
        self._lock = threading.Lock()

    def __call__(self, raw: Any) -> str:
        try:
            return self._to_logged[raw]  # the hot path: one dict lookup
        except (KeyError, TypeError):
            return self._new(raw)

    def _new(self, raw: Any) -> str:
        raw_text = str(raw)
        with self._lock:
            if raw_text in self._to_logged:
                return self._to_logged[raw_text]
            key = raw_text if is_valid_key(raw_text) else _clean_key(raw_text)
            if len(key) > MAX_KEY_LENGTH:
                key = key[: MAX_KEY_LENGTH - 9].rstrip("/") + "_" + _short_hash(raw_text)
            if self._to_raw.get(key, raw_text) != raw_text:
                key = key[: MAX_KEY_LENGTH - 9].rstrip("/") + "_" + _short_hash(raw_text)
            self._to_logged[raw_text] = key
            self._to_raw[key] = raw_text
            if key != raw_text:
                self.changed[raw_text] = key
            return key


# --- values -------------------------------------------------------------------------------------


def truncate(value: str, limit: int) -> str:
    """Cut ``value`` to ``limit`` characters, ending with a visible marker when cut."""
    if len(value) <= limit:
        return value
    return value[: limit - len(TRUNCATION_MARKER)] + TRUNCATION_MARKER


def metric_value(value: Any) -> float | None:
    """Convert a metric value to float, or None when it is not a number.

    Accepts Python and numpy numbers, bools, 0-d arrays and tensors (through ``item()``),
    Decimals and numeric strings. Non-finite values are returned unchanged (the caller
    counts them); None and non-numeric values give None.
    """
    if type(value) is float:  # the hot path
        return value
    if isinstance(value, float):  # numpy's float64 (LightGBM's metrics): 7x faster than below
        return float(value)
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, numbers.Number):
        try:
            return float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError, OverflowError):
            return None
    item = getattr(value, "item", None)
    if callable(item):
        try:
            return metric_value(item())
        except Exception:
            return None
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


# The address in a default repr (``<Foo object at 0x7f...>``, NumPy's ``RandomState(MT19937) at
# 0x7F...``): it differs in every process, and so would the param and the run's fingerprint.
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


def param_text(value: Any) -> str:
    """The text MLflow stores for a param value (None and nested values included), the same in
    every process for the same value."""
    if isinstance(value, str):
        return value
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return repr(value)
    if isinstance(value, set | frozenset) and value:
        # In a fixed order: a set's own order changes from process to process (string hashing
        # is salted), and so would the param and the run's fingerprint.
        return "{" + ", ".join(sorted(map(repr, value))) + "}"
    return _ADDRESS.sub("", _distribution(value) or str(value))


def _distribution(value: Any) -> str | None:
    """A frozen SciPy distribution (a random search's ``randint(1, 6)``) as it was written;
    its repr says only its class and address."""
    dist, args = getattr(value, "dist", None), getattr(value, "args", None)
    if not type(value).__module__.startswith("scipy.stats") or dist is None or args is None:
        return None
    words = [repr(arg) for arg in args]
    words += [f"{key}={item!r}" for key, item in (getattr(value, "kwds", None) or {}).items()]
    return f"{getattr(dist, 'name', type(dist).__name__)}({', '.join(words)})"


def by_name(value: Any) -> Any:
    """A setting that is a function (a custom objective or metric) as its name, not its text.

    ``<function f at 0x7f...>`` differs in every process, so the run's fingerprint would too.
    Functions, methods, partials and callable objects give their qualified name (an object
    without one its type's name); classes and other values are kept; lists and tuples are
    (plain ones) converted item by item.
    """
    if callable(value) and not isinstance(value, type):
        return getattr(value, "__qualname__", None) or type(value).__name__
    if type(value) in (list, tuple):
        return type(value)(by_name(item) for item in value)
    return value


def flatten(params: Mapping[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """Flatten nested mappings (and dataclasses, OmegaConf, namespaces) into dotted keys."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        value = _as_mapping(value)
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, name, sep))
        else:
            flat[name] = value
    return flat


def _as_mapping(value: Any) -> Any:
    if isinstance(value, Mapping):
        return value
    if hasattr(value, "__dataclass_fields__") and not isinstance(value, type):
        import dataclasses

        return {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
    module = type(value).__module__
    if module.startswith("omegaconf"):
        try:
            from omegaconf import OmegaConf

            container = OmegaConf.to_container(value, resolve=True)
            return container
        except Exception:
            return value
    if type(value).__name__ in {"Namespace", "SimpleNamespace", "AttributeDict"}:
        return dict(vars(value)) if not isinstance(value, Mapping) else value
    return value
