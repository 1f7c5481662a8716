"""Secrets by reference: a config holds where a password or key is (`SecretRef`), never the value, so the
job graph a runner receives carries no secret; workers resolve the reference when they make their client
(`DoFn.setup`), the driver when it checks the stores and sources at start-up.

A reference is one of:
- `env:NAME`: the environment variable NAME of the process that resolves it (driver or worker);
- `file:PATH`: the content of the file PATH (one trailing newline removed), e.g. a mounted Kubernetes or
  Docker secret;
- `gcp-secret:projects/P/secrets/S/versions/V`: a Google Secret Manager version (needs
  `pip install google-cloud-secret-manager`; read once per process).

Any other value is a literal secret. Validating it moves it into this process's environment under
`BVS_SECRET_<hmac>` (a keyed hash with a key made per process, so the name says nothing about the value)
and keeps `env:BVS_SECRET_<hmac>` in the config: workers of a local runner (DirectRunner, also with
`multi_processing`) inherit the environment and resolve it; workers elsewhere cannot, so the entry point
refuses a literal for any other runner (`literal_secrets` names them).
"""
from __future__ import annotations

import functools
import hashlib
import hmac
import os
from pathlib import Path
from typing import Any, Iterator, Optional

from pydantic import BaseModel, ConfigDict, SecretStr, model_validator

ENV, FILE, GCP = "env:", "file:", "gcp-secret:"
LITERAL_PREFIX = "BVS_SECRET_"
"""Environment variables holding literal secrets moved out of the config."""
_PROCESS_KEY = os.urandom(32)


class SecretError(ValueError):
    """A reference that cannot be resolved (variable unset, file unreadable, secret manager unavailable).
    Its message names the reference, never a value."""


class SecretRef(BaseModel):
    """Where a secret is: `env:NAME`, `file:PATH` or `gcp-secret:projects/P/secrets/S/versions/V`. Built
    from a string; any other string is a literal, moved into the environment (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    ref: str

    @model_validator(mode="before")
    @classmethod
    def _from_value(cls, value: Any) -> Any:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if isinstance(value, dict) and isinstance(value.get("ref"), str):
            value = value["ref"]
        if isinstance(value, str):
            return {"ref": value if is_reference(value) else _move_to_environment(value)}
        return value

    @classmethod
    def env(cls, name: str) -> "SecretRef":
        return cls(ref=ENV + name)

    @property
    def from_literal(self) -> bool:
        """Whether this was a literal secret, now held in this process's environment only."""
        return self.ref.startswith(ENV + LITERAL_PREFIX)

    def resolve(self) -> str:
        """The secret's value; raises `SecretError`."""
        kind, _, where = self.ref.partition(":")
        if kind == "env":
            value = os.environ.get(where)
            if value is None:
                raise SecretError(f"{self}: the environment variable {where} is not set"
                                  + (" (a literal secret reaches local workers only)" if self.from_literal else ""))
            return value
        if kind == "file":
            try:
                text = Path(where).read_text(encoding="utf-8")
            except OSError as exc:
                raise SecretError(f"{self}: cannot read the file: {exc.strerror or type(exc).__name__}") from None
            return text[:-1] if text.endswith("\n") else text
        return _gcp_secret(where)

    get_secret_value = resolve
    """As `pydantic.SecretStr` has it."""

    def resolve_or_none(self) -> Optional[str]:
        """The value, or None where an `env:` variable is unset."""
        if self.ref.startswith(ENV) and self.ref[len(ENV):] not in os.environ:
            return None
        return self.resolve()

    def __str__(self) -> str:
        return self.ref

    def __repr__(self) -> str:
        return f"SecretRef({self.ref!r})"


def is_reference(value: str) -> bool:
    """Whether `value` names where a secret is rather than being one."""
    if value.startswith(ENV):
        return bool(value[len(ENV):])
    if value.startswith(FILE):
        return bool(value[len(FILE):])
    return value.startswith(GCP + "projects/") and "/secrets/" in value


def _move_to_environment(value: str) -> str:
    name = LITERAL_PREFIX + hmac.new(_PROCESS_KEY, value.encode("utf-8"), hashlib.sha256).hexdigest()[:24].upper()
    os.environ[name] = value
    return ENV + name


@functools.lru_cache(maxsize=64)
def _gcp_secret(name: str) -> str:
    try:
        from google.cloud import secretmanager
    except ImportError:
        raise SecretError(f"{GCP}{name}: Secret Manager references need "
                          "`pip install google-cloud-secret-manager` on the driver and the workers") from None
    try:
        response = secretmanager.SecretManagerServiceClient().access_secret_version(name=name)
    except Exception as exc:  # noqa: BLE001 - one line naming the reference
        raise SecretError(f"{GCP}{name}: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
    return response.payload.data.decode("utf-8")


def secret_refs(value: Any, path: str = "") -> Iterator[tuple[str, SecretRef]]:
    """Every `SecretRef` in a config (pydantic models, dicts, lists and tuples), with its dotted field path."""
    if isinstance(value, SecretRef):
        yield path, value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from secret_refs(getattr(value, name), f"{path}.{name}" if path else name)
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from secret_refs(item, f"{path}[{key}]")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from secret_refs(item, f"{path}[{getattr(item, 'sink_name', index)}]")


def literal_secrets(config: Any) -> list[str]:
    """Field paths of `config` whose secret was given as a literal (held in this process's environment)."""
    return [path for path, ref in secret_refs(config) if ref.from_literal]
