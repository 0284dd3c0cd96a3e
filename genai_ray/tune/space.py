"""Search-space files: which config fields a campaign varies, and over what.

A space file names a base preset (without one, the default preset fitted to the dataset, as ``genai-ray
train`` does), fixed overrides, and distributions over dotted config keys::

    preset: default
    base: {train: {epochs: 8}}
    params:
      train.g_lr: {loguniform: [1.0e-5, 1.0e-3]}
      train.loss: {choice: [bce, hinge]}

Every key and every value a distribution can produce is checked against the one config model before any
trial starts, so a typo fails in a second instead of after an hour of search.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genai_ray.config import Config, build_config, deep_merge, load_yaml
from genai_ray.errors import UserError

# Ray Tune is imported inside the function that builds the sampling domains: the CLI loads this module at start-up,
# and `genai-ray --help` and config errors stay fast.

DISTRIBUTIONS = ("loguniform", "uniform", "choice", "randint")
TOP_KEYS = {"preset", "base", "params"}


@dataclass
class SearchSpace:
    preset: str
    base: dict[str, Any]
    params: dict[str, dict[str, Any]]  # dotted key -> {distribution: args}
    source: str
    preset_named: bool = True  # False: the file names no preset, so the default is fitted to the dataset
    fitted: dict[str, Any] | None = None  # that fitting (genai_ray/train/defaults.py), under base and params

    def tune_space(self) -> dict[str, Any]:
        """The Ray Tune param space: dotted key -> tune.loguniform(...)/choice(...)."""
        from ray import tune

        builders = {
            "loguniform": lambda a: tune.loguniform(*a),
            "uniform": lambda a: tune.uniform(*a),
            "choice": lambda a: tune.choice(a),
            "randint": lambda a: tune.randint(*a),
        }
        return {key: builders[kind](args) for key, spec in self.params.items() for kind, args in spec.items()}

    def config_for(self, sample: dict[str, Any], overrides: dict[str, Any] | None = None) -> Config:
        """The full config of one trial: preset, base, then the sampled values, then run overrides."""
        merged = deep_merge(copy.deepcopy(self.base), nested(sample))
        return build_config(self.preset, deep_merge(merged, overrides or {}), source=self.source,
                            fitted=self.fitted_in_use())

    def fitted_in_use(self) -> dict[str, Any] | None:
        """The fitting under ``base``: none when the file names its preset."""
        return None if self.preset_named else self.fitted


def nested(flat: dict[str, Any]) -> dict[str, Any]:
    """{"train.g_lr": 1e-4} -> {"train": {"g_lr": 1e-4}}."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def _candidates(key: str, kind: str, args: Any, source: str) -> list[Any]:
    where = f"{source}: params.{key}"
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise UserError(f"{where}: choice needs a non-empty list, e.g. {{choice: [64, 128]}}")
        return list(args)
    if not isinstance(args, list) or len(args) != 2 or not all(isinstance(a, int | float) for a in args):
        raise UserError(f"{where}: {kind} needs [low, high], e.g. {{{kind}: [1.0e-5, 1.0e-3]}}")
    low, high = args
    if not low < high or kind == "loguniform" and low <= 0:
        raise UserError(f"{where}: {kind} range [{low}, {high}] is empty or not positive")
    return [low, high - 1 if kind == "randint" else high]


def candidate_values(space: SearchSpace) -> list[tuple[str, Any]]:
    """(key, value) for each end of every range and each choice: what ``load_space`` checked."""
    return [(key, value) for key, spec in space.params.items() for kind, args in spec.items()
            for value in _candidates(key, kind, args, space.source)]


def load_space(path: str | Path) -> SearchSpace:
    """Read and fully validate a space file. Raises ``UserError`` naming the key."""
    source = str(path)
    data = load_yaml(path)
    unknown = set(data) - TOP_KEYS
    if unknown:
        raise UserError(f"{source}: unknown top-level key {sorted(unknown)[0]!r}; use preset, base and params")
    params = data.get("params") or {}
    if not isinstance(params, dict) or not params:
        raise UserError(f"{source}: 'params' must map config keys to distributions, e.g. train.g_lr: "
                        "{loguniform: [1.0e-5, 1.0e-3]}")
    base = data.get("base") or {}
    if not isinstance(base, dict):
        raise UserError(f"{source}: 'base' must be a mapping of config sections")
    space = SearchSpace(str(data.get("preset", "default")), base, {}, source, preset_named="preset" in data)
    space.config_for({})  # the base alone must be valid
    for key, spec in params.items():
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
            raise UserError(f"{source}: params.{key}: give exactly one of {', '.join(DISTRIBUTIONS)}, "
                            "e.g. {choice: [a, b]}")
        kind, args = next(iter(spec.items()))
        for value in _candidates(key, kind, args, source):
            try:
                space.config_for({key: value})
            except UserError as err:
                raise UserError(f"{source}: params.{key}={value!r} is not a valid config value "
                                f"({str(err).split(': ', 1)[-1]})") from None
        space.params[key] = {kind: args}
    return space
