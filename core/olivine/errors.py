"""Errors that olivine reports to users, each with its exit code.

Every error a user can cause carries a message that names the bad key, file or
plugin and says what would be right. The CLI prints the message (no traceback)
and exits with ``exit_code``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from difflib import get_close_matches


class OlivineError(Exception):
    """Base class of the errors olivine reports to users."""

    exit_code = 1


class UsageError(OlivineError):
    """Bad input from the user: a bad flag, a missing file, a bad config value."""

    exit_code = 2


class ConfigError(UsageError):
    """A workflow config with one or more problems, all reported at once."""

    def __init__(self, problems: str | Sequence[str], source: str | None = None) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        count = len(self.problems)
        head = f"{count} problem{'s' if count != 1 else ''}{where}:"
        super().__init__("\n".join([head, *(f"  - {p}" for p in self.problems)]))


class PluginError(OlivineError):
    """A plugin failed to load or registered something that clashes."""

    exit_code = 2


class PassError(OlivineError):
    """A pass failed while running; the message names the step, the pass and the cause."""

    exit_code = 1

    def __init__(self, step: str, pass_name: str, cause: str, detail: str | None = None) -> None:
        self.step = step
        self.pass_name = pass_name
        self.cause = cause
        self.detail = detail
        super().__init__(f"step '{step}' (pass {pass_name}) failed: {cause}")


class GoalsNotMetError(OlivineError):
    """The run finished but no model met the evaluator's goals."""

    exit_code = 3


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or ``""``."""
    choices = list(choices)
    lowered = {c.lower(): c for c in choices}
    if word.lower() in lowered and lowered[word.lower()] != word:
        return f" (did you mean '{lowered[word.lower()]}'?)"
    prefixed = [c for c in choices if len(word) >= 3 and c.lower().startswith(word.lower())]
    if len(prefixed) == 1:
        return f" (did you mean '{prefixed[0]}'?)"
    match = get_close_matches(word, choices, n=1, cutoff=0.6)
    if not match:
        match = [lowered[m] for m in get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.6)]
    return f" (did you mean '{match[0]}'?)" if match else ""
