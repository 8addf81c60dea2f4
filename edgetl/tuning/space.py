"""The search space: named parameters (or dotted profile fields) -> Optuna distributions -> profile overrides.

A parameter is sampled only where it applies (`unfreeze_blocks` only for `strategy: partial`,
`backbone_lr_ratio` only when the backbone trains), so the sampler does not model noise. Every
sampled trial is turned into a complete profile and validated like any other profile before it is
built: a combination the profile refuses fails that trial with the profile's own message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edgetl.backbones.registry import backbone_names, get_backbone
from edgetl.errors import ProfileError
from edgetl.profile import Profile, SearchRange, SearchValue, TuneConfig

# Short names for the fields a search usually varies, and where they live in the profile.
ALIASES: dict[str, str] = {
    "backbone": "backbone.name",
    "input_size": "backbone.input_size",
    "strategy": "finetune.strategy",
    "unfreeze_blocks": "finetune.unfreeze_blocks",
    "lr": "finetune.lr",
    "backbone_lr_ratio": "finetune.backbone_lr_ratio",
    "augmentation": "finetune.augmentation",
    "epochs": "finetune.epochs",
    "calibration_method": "optimize.int8.calibration_method",
}

# Augmentation strength as one categorical parameter (TPE models one choice better than four coupled floats).
AUGMENTATION_PRESETS: dict[str, dict[str, Any]] = {
    "none": {"enabled": False},
    "light": {"enabled": True, "crop_scale": [0.6, 1.0], "hflip": True, "color_jitter": 0.1},
    "default": {"enabled": True, "crop_scale": [0.35, 1.0], "hflip": True, "color_jitter": 0.3},
    "strong": {"enabled": True, "crop_scale": [0.2, 1.0], "hflip": True, "color_jitter": 0.4},
}

# parameter -> (parameter it depends on, values of that parameter where it applies)
CONDITIONS: dict[str, tuple[str, frozenset[str]]] = {
    "unfreeze_blocks": ("strategy", frozenset({"partial"})),
    "backbone_lr_ratio": ("strategy", frozenset({"partial", "full", "auto", "gradual"})),
}


def default_space(available_backbones: list[str]) -> dict[str, list[SearchValue] | SearchRange]:
    """What `edgetl tune` searches when the profile's `tune.search` is empty.

    Sized for a 30-minute search on a 2-core CPU: the backbones whose weights are on this machine,
    input sizes from 128 to 224 px (latency falls with the square of it), how much of the backbone
    trains, the head's learning rate, augmentation strength, epochs and the int8 calibration method.
    """
    return {
        "backbone": list(available_backbones),
        "input_size": SearchRange(low=128, high=224, step=32),
        "strategy": ["feature_extract", "partial", "full"],
        "unfreeze_blocks": SearchRange(low=1, high=6),
        "lr": SearchRange(low=3e-4, high=3e-3, log=True),
        "backbone_lr_ratio": SearchRange(low=0.1, high=1.0, log=True),
        "augmentation": ["light", "default", "strong"],
        "epochs": SearchRange(low=4, high=16, step=4),
        "calibration_method": ["minmax", "percentile"],
    }


def local_backbones() -> list[str]:
    """Registered backbones whose pretrained weights are on this machine (nothing downloads during a search)."""
    from edgetl.backbones.weights import find_local_weights

    return [name for name in backbone_names() if find_local_weights(get_backbone(name)) is not None]


@dataclass(frozen=True)
class Parameter:
    name: str  # as written in tune.search
    path: str  # dotted profile field
    choices: list[SearchValue] | None
    range: SearchRange | None

    def distribution(self) -> Any:
        import optuna

        if self.choices is not None:
            return optuna.distributions.CategoricalDistribution(self.choices)
        r = self.range
        assert r is not None
        if r.integer:
            return optuna.distributions.IntDistribution(int(r.low), int(r.high), log=r.log, step=int(r.step or 1))
        return optuna.distributions.FloatDistribution(r.low, r.high, log=r.log, step=r.step)

    def suggest(self, trial: Any) -> Any:
        """Sample through Optuna's public `suggest_*` API, from the one mapping in `distribution`."""
        import optuna

        d = self.distribution()
        if isinstance(d, optuna.distributions.CategoricalDistribution):
            return trial.suggest_categorical(self.name, list(d.choices))
        if isinstance(d, optuna.distributions.IntDistribution):
            return trial.suggest_int(self.name, d.low, d.high, log=d.log, step=d.step)
        return trial.suggest_float(self.name, d.low, d.high, log=d.log, step=d.step)

    def value_for_profile(self, value: Any) -> Any:
        if self.name == "augmentation":
            return AUGMENTATION_PRESETS[str(value)]
        return value


class SearchSpace:
    """The parameters of one study, in sampling order (a condition's parameter first)."""

    def __init__(self, parameters: list[Parameter]) -> None:
        order = {name: i for i, name in enumerate(ALIASES)}
        self.parameters = sorted(parameters, key=lambda p: (order.get(p.name, len(order)), p.name))

    @classmethod
    def from_config(cls, tune: TuneConfig, where: str) -> SearchSpace:
        """The profile's space (or the default one), every name and choice checked; ProfileError naming the field."""
        search = tune.search or default_space(local_backbones())
        parameters = []
        for name, spec in search.items():
            path = ALIASES.get(name, name)
            if name not in ALIASES and "." not in name:
                known = ", ".join(ALIASES)
                raise ProfileError(
                    f"{where}: tune.search.{name}: unknown parameter; use one of {known} or a dotted field"
                )
            choices = list(spec) if isinstance(spec, list) else None
            if choices is not None and not choices:
                raise ProfileError(f"{where}: tune.search.{name}: give at least one choice")
            if name == "augmentation" and choices is not None:
                unknown = [c for c in choices if c not in AUGMENTATION_PRESETS]
                if unknown:
                    raise ProfileError(
                        f"{where}: tune.search.augmentation: unknown preset(s) {unknown}; "
                        f"presets: {', '.join(AUGMENTATION_PRESETS)}"
                    )
            if name == "backbone" and choices is not None:
                for choice in choices:
                    get_backbone(str(choice))  # BackboneError: one line with a suggestion
            parameters.append(Parameter(name, path, choices, spec if isinstance(spec, SearchRange) else None))
        return cls(parameters)

    def check_values(self, base: dict[str, Any], where: str) -> None:
        """Every choice and both ends of every range must make a valid profile, checked before any trial runs."""
        from pydantic import ValidationError

        from edgetl.profile import deep_merge

        for parameter in self.parameters:
            r = parameter.range
            candidates = parameter.choices if parameter.choices is not None else [r.low, r.high]  # type: ignore[union-attr]
            for value in candidates:
                if r is not None and r.integer:
                    value = int(value)
                try:
                    Profile.model_validate(deep_merge(base, self.overrides({parameter.name: value})))
                except ValidationError as error:
                    problem = error.errors()[0]
                    field = ".".join(str(part) for part in problem["loc"])
                    raise ProfileError(
                        f"{where}: tune.search.{parameter.name}: {value!r} makes an invalid profile "
                        f"({field}: {problem['msg']})"
                    ) from None

    def sample(self, trial: Any) -> dict[str, Any]:
        """Sample the trial's parameters (define-by-run: conditional ones only where they apply)."""
        values: dict[str, Any] = {}
        for parameter in self.parameters:
            condition = CONDITIONS.get(parameter.name)
            if condition is not None:
                depends, where = condition
                current = values.get(depends)
                if current is not None and str(current) not in where:
                    continue
            values[parameter.name] = parameter.suggest(trial)
        return values

    def overrides(self, values: dict[str, Any]) -> dict[str, Any]:
        """Nested profile overrides for sampled values."""
        by_name = {p.name: p for p in self.parameters}
        nested: dict[str, Any] = {}
        for name, value in values.items():
            parameter = by_name.get(name)
            path = parameter.path if parameter else ALIASES.get(name, name)
            shown = parameter.value_for_profile(value) if parameter else value
            node = nested
            *parents, leaf = path.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = shown
        return nested

    def profile_values(self, profile: Profile) -> dict[str, Any]:
        """The base profile's own value of every parameter (enqueued as the first trial: the search starts there)."""
        dumped = profile.model_dump(mode="json")
        values: dict[str, Any] = {}
        for parameter in self.parameters:
            node: Any = dumped
            for part in parameter.path.split("."):
                node = node.get(part) if isinstance(node, dict) else None
            if parameter.name == "augmentation":
                node = _preset_of(node)
            if parameter.name == "input_size" and node is None:
                node = get_backbone(dumped["backbone"]["name"]).input_size
            if parameter.name == "epochs" and node is None:
                continue  # the data-sized default: let the sampler choose
            if parameter.choices is not None and node not in parameter.choices:
                continue
            if parameter.range is not None and not (
                isinstance(node, int | float) and parameter.range.low <= node <= parameter.range.high
            ):
                continue
            values[parameter.name] = node
        return values

    def describe(self) -> list[dict[str, Any]]:
        return [
            {
                "name": p.name,
                "field": p.path,
                **({"choices": p.choices} if p.choices is not None else {"range": p.range.model_dump()}),  # type: ignore[union-attr]
                **(
                    {"applies_when": {CONDITIONS[p.name][0]: sorted(CONDITIONS[p.name][1])}}
                    if p.name in CONDITIONS
                    else {}
                ),
            }
            for p in self.parameters
        ]


def _preset_of(augmentation: Any) -> str | None:
    if not isinstance(augmentation, dict):
        return None
    if not augmentation.get("enabled", True):
        return "none"
    for name, preset in AUGMENTATION_PRESETS.items():
        if all(augmentation.get(k) == v for k, v in preset.items()):
            return name
    return None
