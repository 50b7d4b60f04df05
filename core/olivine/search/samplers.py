"""Samplers: which candidate to try next (sequential, random, TPE through optuna)."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from olivine.errors import UsageError
from olivine.search.space import Dimension, combinations

Choice = dict[str, Any]


class Sampler:
    """Proposes choices (``{"step.option": value}``) and learns from their scores."""

    def __init__(self, dims: list[Dimension], seed: int) -> None:
        self.dims = dims
        self.seed = seed

    def ask(self, n: int) -> list[Choice]:
        """Up to ``n`` new choices; an empty list when the space is exhausted."""
        raise NotImplementedError

    def tell(self, choice: Choice, score: float | None) -> None:
        """The score of a tried choice (higher is better; ``None`` when it failed)."""


class SequentialSampler(Sampler):
    """Every combination, in the order the values are written (Olive's exhaustive)."""

    def __init__(self, dims: list[Dimension], seed: int) -> None:
        super().__init__(dims, seed)
        self._todo = list(combinations(dims))

    def ask(self, n: int) -> list[Choice]:
        """The next ``n`` combinations."""
        out, self._todo = self._todo[:n], self._todo[n:]
        return out


class RandomSampler(SequentialSampler):
    """Every combination once, in a random order fixed by ``seed``."""

    def __init__(self, dims: list[Dimension], seed: int) -> None:
        super().__init__(dims, seed)
        random.Random(seed).shuffle(self._todo)


class TpeSampler(Sampler):
    """Tree-structured Parzen estimator (optuna), seeded; never proposes a choice twice."""

    def __init__(self, dims: list[Dimension], seed: int) -> None:
        super().__init__(dims, seed)
        try:
            import optuna
        except ImportError:
            raise UsageError("the tpe sampler needs optuna: pip install optuna") from None
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self._optuna = optuna
        self._study = optuna.create_study(
            direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed, n_startup_trials=3))
        self._trials: dict[int, Any] = {}
        self._seen: set[tuple[Any, ...]] = set()
        self._total = 1
        for d in dims:
            self._total *= len(d.values)

    def _key(self, choice: Choice) -> tuple[Any, ...]:
        return tuple(choice[d.label] for d in self.dims)

    def ask(self, n: int) -> list[Choice]:
        """Ask optuna for new choices; a repeat is told its earlier fate and skipped."""
        out: list[Choice] = []
        attempts = 0
        while len(out) < n and len(self._seen) < self._total and attempts < 50 * n:
            attempts += 1
            trial = self._study.ask()
            choice = {d.label: d.values[trial.suggest_categorical(d.label, list(range(len(d.values))))]
                      for d in self.dims}
            key = self._key(choice)
            if key in self._seen:
                self._study.tell(trial, state=self._optuna.trial.TrialState.PRUNED)
                continue
            self._seen.add(key)
            self._trials[id(choice)] = trial
            choice["__trial__"] = trial.number
            out.append(choice)
        return out

    def tell(self, choice: Choice, score: float | None) -> None:
        """Report a score to optuna (failures as failed trials)."""
        trial = next((t for t in self._trials.values() if t.number == choice.get("__trial__")), None)
        if trial is None:
            return
        if score is None:
            self._study.tell(trial, state=self._optuna.trial.TrialState.FAIL)
        else:
            self._study.tell(trial, score)


SAMPLERS: dict[str, Callable[[list[Dimension], int], Sampler]] = {
    "sequential": SequentialSampler, "exhaustive": SequentialSampler,
    "random": RandomSampler, "tpe": TpeSampler,
}
