"""How ``olivine init`` asks its questions: plain prompts, ``questionary``, or an answers file.

Every question has a key (``model_type``, ``precision``, ...): the answers file and
``--answer KEY=VALUE`` give answers by key, and a missing answer falls back to the
question's default, or is an error naming the key and its choices.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

from olivine.errors import UsageError

#: ``(label, value)`` pairs of a choice question.
Choices = Sequence[tuple[str, str]]


class GoBack(Exception):
    """The user asked to go back one step of the wizard."""


class Asker:
    """The questions' interface; subclasses answer them."""

    def select(self, key: str, message: str, choices: Choices, back: bool = True) -> str:
        """One value of ``choices``."""
        raise NotImplementedError

    def text(self, key: str, message: str, default: str | None = None, required: bool = False) -> str:
        """A line of text (``default`` when empty)."""
        raise NotImplementedError

    def confirm(self, key: str, message: str, default: bool = False) -> bool:
        """Yes or no."""
        raise NotImplementedError

    def checkbox(self, key: str, message: str, choices: Choices, checked: Sequence[str] = ()
                 ) -> list[str]:
        """Some values of ``choices``."""
        raise NotImplementedError


def _truth(value: object, key: str) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("y", "yes", "true", "1"):
        return True
    if text in ("n", "no", "false", "0"):
        return False
    raise UsageError(f"--answers: {key}: expected yes or no, got {value!r}")


class AnswersAsker(Asker):
    """Answers from a mapping (an answers file and ``--answer`` flags); never prompts."""

    def __init__(self, answers: Mapping[str, Any]) -> None:
        self.answers = dict(answers)
        self.used: set[str] = set()

    def _get(self, key: str) -> Any:
        self.used.add(key)
        return self.answers.get(key)

    def select(self, key: str, message: str, choices: Choices, back: bool = True) -> str:
        """The answer given for ``key``, checked against the choices."""
        value = self._get(key)
        values = [v for _, v in choices]
        if value is None:
            raise UsageError(f"--answers: no answer for {key!r} ({message.rstrip(':?')}); "
                             f"choose one of: {', '.join(values)}")
        if str(value) not in values:
            raise UsageError(f"--answers: {key}: {value!r} is not a choice; choose one of: "
                             f"{', '.join(values)}")
        return str(value)

    def text(self, key: str, message: str, default: str | None = None, required: bool = False) -> str:
        """The answer given for ``key``, else the default."""
        value = self._get(key)
        if value is None or str(value).strip() == "":
            if required and not default:
                raise UsageError(f"--answers: no answer for {key!r} ({message.rstrip(':?')})")
            return default or ""
        return str(value)

    def confirm(self, key: str, message: str, default: bool = False) -> bool:
        """The answer given for ``key``, else the default."""
        value = self._get(key)
        return default if value is None else _truth(value, key)

    def checkbox(self, key: str, message: str, choices: Choices, checked: Sequence[str] = ()
                 ) -> list[str]:
        """The list given for ``key`` (or a comma-separated string), else the checked ones."""
        value = self._get(key)
        if value is None:
            return list(checked)
        items = value if isinstance(value, list) else [v for v in str(value).split(",") if v.strip()]
        values = [v for _, v in choices]
        bad = [str(i) for i in items if str(i).strip() not in values]
        if bad:
            raise UsageError(f"--answers: {key}: {', '.join(bad)} not among the choices: "
                             f"{', '.join(values)}")
        return [str(i).strip() for i in items]

    def unused(self) -> list[str]:
        """Keys given that no question asked."""
        return sorted(set(self.answers) - self.used)


class PromptAsker(Asker):
    """Plain numbered prompts on a text stream (works through pipes: what tests drive)."""

    def __init__(self, stdin: TextIO | None = None, stdout: TextIO | None = None) -> None:
        self.stdin = stdin or sys.stdin
        self.stdout = stdout or sys.stdout

    def _line(self, prompt: str) -> str:
        self.stdout.write(prompt)
        self.stdout.flush()
        line = self.stdin.readline()
        if not line:
            raise EOFError
        return line.strip()

    def select(self, key: str, message: str, choices: Choices, back: bool = True) -> str:
        """Print the numbered choices; read a number (or a value; ``b`` goes back)."""
        self.stdout.write(f"? {message}\n")
        for i, (label, _) in enumerate(choices, 1):
            self.stdout.write(f"  {i}) {label}\n")
        if back:
            self.stdout.write("  b) <- Back\n")
        values = [v for _, v in choices]
        while True:
            answer = self._line(f"  choice [1-{len(choices)}, default 1]: ") or "1"
            if back and answer.lower() in ("b", "back"):
                raise GoBack
            if answer.isdigit() and 1 <= int(answer) <= len(choices):
                return values[int(answer) - 1]
            if answer in values:
                return answer
            self.stdout.write(f"  please answer 1 to {len(choices)}\n")

    def text(self, key: str, message: str, default: str | None = None, required: bool = False) -> str:
        """Read a line; the default on an empty one."""
        shown = f" [{default}]" if default else ""
        while True:
            answer = self._line(f"? {message}{shown} ") or (default or "")
            if answer or not required:
                return answer
            self.stdout.write("  please enter a value\n")

    def confirm(self, key: str, message: str, default: bool = False) -> bool:
        """Read y or n."""
        while True:
            answer = self._line(f"? {message} [{'Y/n' if default else 'y/N'}] ").lower()
            if not answer:
                return default
            if answer in ("y", "yes", "n", "no"):
                return answer.startswith("y")
            self.stdout.write("  please answer y or n\n")

    def checkbox(self, key: str, message: str, choices: Choices, checked: Sequence[str] = ()
                 ) -> list[str]:
        """Read numbers separated by commas (empty: the checked ones)."""
        self.stdout.write(f"? {message}\n")
        for i, (label, value) in enumerate(choices, 1):
            self.stdout.write(f"  {i}) [{'x' if value in checked else ' '}] {label}\n")
        values = [v for _, v in choices]
        while True:
            answer = self._line("  numbers, comma-separated (empty: as marked): ")
            if not answer:
                return list(checked)
            picks = [p.strip() for p in answer.split(",") if p.strip()]
            if all(p.isdigit() and 1 <= int(p) <= len(values) for p in picks):
                return [values[int(p) - 1] for p in picks]
            self.stdout.write(f"  please answer numbers from 1 to {len(values)}\n")


class QuestionaryAsker(Asker):  # pragma: no cover - needs a terminal
    """Arrow-key prompts through ``questionary`` (the optional ``olivine[init]`` extra)."""

    def __init__(self) -> None:
        import questionary

        self.q = questionary

    def _ask(self, question: Any) -> Any:
        value = question.ask()
        if value is None:
            raise KeyboardInterrupt
        return value

    def select(self, key: str, message: str, choices: Choices, back: bool = True) -> str:
        """A select list (with a Back entry)."""
        items = [self.q.Choice(label, value=value) for label, value in choices]
        if back:
            items.append(self.q.Choice("\u2190 Back", value="__back__"))
        value = self._ask(self.q.select(message, choices=items))
        if value == "__back__":
            raise GoBack
        return str(value)

    def text(self, key: str, message: str, default: str | None = None, required: bool = False) -> str:
        """A text prompt."""
        def check(x: str) -> bool | str:
            return True if x.strip() or not required else "Please enter a value"

        return str(self._ask(self.q.text(message, default=default or "", validate=check)))

    def confirm(self, key: str, message: str, default: bool = False) -> bool:
        """A yes/no prompt."""
        return bool(self._ask(self.q.confirm(message, default=default)))

    def checkbox(self, key: str, message: str, choices: Choices, checked: Sequence[str] = ()
                 ) -> list[str]:
        """A checkbox list."""
        items = [self.q.Choice(label, value=value, checked=value in checked) for label, value in choices]
        return list(self._ask(self.q.checkbox(message, choices=items)))
