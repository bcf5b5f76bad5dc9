"""Shared CLI plumbing: the per-invocation state, opening the store, parsing KEY=VALUE."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from ..core.errors import InvalidInput
from .output import Output

if TYPE_CHECKING:
    from ..core.repo import Repo

JSON_OPT = typer.Option(False, "--json", help="Print machine-readable JSON on stdout.")


@dataclass
class State:
    store: Path | None = None
    quiet: bool = False
    repo_obj: Repo | None = None  # the store opened (an api.Repo; discover and clone declare the core class)
    mutated: bool = False

    def repo(self):
        """The store for this command (found like git finds .git/)."""
        from ..api import Repo
        if self.repo_obj is None:
            self.repo_obj = Repo.discover(store=self.store)
            o = Output(quiet=self.quiet)
            for warning in self.repo_obj.settings.warnings:  # unknown keys of config.toml, once
                o.warn(warning)
        return self.repo_obj

    def reset(self) -> None:
        """Back to the state of a new invocation (the command modules hold this object, not a copy)."""
        self.__dict__.update(vars(State()))


STATE = State()


def state(ctx: typer.Context | None = None) -> State:
    return STATE


def out(json_mode: bool = False) -> Output:
    return Output(json_mode=json_mode, quiet=STATE.quiet)


def parse_value(text: str):
    """A metric/param value: JSON number, bool, null, list or object if it parses, else a string."""
    try:
        v = json.loads(text)
    except ValueError:
        return text
    return v


def parse_pairs(items: list[str] | None, what: str) -> dict:
    outd = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InvalidInput(f"--{what} {item!r}: expected KEY=VALUE")
        outd[key] = parse_value(value.strip())
    return outd


def short(oid: str | None, n: int = 10) -> str:
    return oid[:n] if oid else "-"


def cwd() -> Path:
    return Path(os.getcwd())
