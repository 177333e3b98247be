"""The plugin manager: loads entry points one by one and builds the learner/dataset registries.

Nothing here runs at import time: :func:`load_plugins` builds a fresh :class:`PluginHost`.
A plugin that fails to import, raises inside a hook or registers a duplicate name is
recorded as a :class:`PluginFailure` and left out; every other plugin keeps working.
"""

from __future__ import annotations

import importlib.metadata as md
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from fewshot_bench import hookspecs
from fewshot_bench.data.base import DatasetSpec
from fewshot_bench.errors import ConfigError, PluginError
from fewshot_bench.learner import LEARNER_NAME, Learner

GROUP = "fewshot_bench"
DISABLE_ENV = "FEWSHOT_BENCH_DISABLE_PLUGINS"
STRICT_ENV = "FEWSHOT_BENCH_STRICT_PLUGINS"


@dataclass
class PluginInfo:
    """An installed plugin: its entry-point name, distribution, version and what it provides."""

    name: str
    distribution: str
    version: str
    module: str
    learners: list[str] = field(default_factory=list)
    datasets: list[str] = field(default_factory=list)
    backbones: list[str] = field(default_factory=list)
    disabled: bool = False


@dataclass
class PluginFailure:
    """Why a plugin (or one of its registrations) was left out."""

    plugin: str
    distribution: str
    stage: str  # "import", "hook", "register"
    error: str


@dataclass
class Registered:
    """A registered object and the plugin that provided it."""

    obj: Any
    plugin: PluginInfo


class PluginHost:
    """Registries of learners, datasets and backbones built from the loaded plugins."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        self.plugins: dict[str, PluginInfo] = {}
        self.failures: list[PluginFailure] = []
        self.learners: dict[str, Registered] = {}
        self.datasets: dict[str, Registered] = {}
        self.dataset_aliases: dict[str, str] = {}
        self.backbones: dict[str, Registered] = {}
        # Learner name -> distributions whose registration of that name was rejected.
        self.duplicate_learners: dict[str, list[str]] = {}

    # --- lookups -------------------------------------------------------------------------

    def learner(self, name: str) -> type[Learner]:
        """The learner class called ``name``, or an error listing the known ones."""
        if name not in self.learners:
            raise ConfigError(f"unknown learner {name!r}; known learners: {', '.join(sorted(self.learners))}")
        return self.learners[name].obj

    def learner_plugin(self, name: str) -> PluginInfo:
        """The plugin that provided learner ``name``."""
        self.learner(name)
        return self.learners[name].plugin

    def dataset(self, name: str) -> DatasetSpec:
        """The dataset spec called ``name`` (or one of its aliases), or an error listing the known ones."""
        canonical = self.dataset_aliases.get(name.lower(), name)
        if canonical not in self.datasets:
            raise ConfigError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(self.datasets))}")
        return self.datasets[canonical].obj

    def backbone(self, name: str) -> Any:
        """The backbone factory called ``name``, or an error listing the known ones."""
        if name not in self.backbones:
            raise ConfigError(f"unknown backbone {name!r}; known backbones: {', '.join(sorted(self.backbones))}")
        return self.backbones[name].obj

    # --- loading -------------------------------------------------------------------------

    def _fail(self, info: PluginInfo, stage: str, error: BaseException | str) -> None:
        msg = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        self.failures.append(PluginFailure(info.name, info.distribution, stage, msg))

    def _call_hook(self, hook_name: str, make_register: Callable[[PluginInfo], Callable]) -> None:
        """Call one hook implementation at a time so a failing plugin is isolated and named."""
        by_plugin = {id(p): name for name, p in self.pm.list_name_plugin()}
        for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
            info = self.plugins[by_plugin[id(impl.plugin)]]
            try:
                impl.function(register=make_register(info))
            except (Exception, SystemExit) as exc:  # a broken plugin must not break the others
                self._fail(info, "hook", exc)

    def _learner_register(self, info: PluginInfo) -> Callable[[type], None]:
        def register(cls: type) -> None:
            name = getattr(cls, "name", None)
            if not (isinstance(cls, type) and issubclass(cls, Learner)):
                return self._fail(info, "register", f"{cls!r} is not a fewshot_bench.Learner subclass")
            if not isinstance(name, str) or not LEARNER_NAME.match(name):
                return self._fail(info, "register", f"learner name {name!r} of {cls.__qualname__} is not lower-case words joined by '-'")
            if name in self.learners:
                first = self.learners[name].plugin
                self.duplicate_learners.setdefault(name, []).append(info.distribution)
                return self._fail(
                    info,
                    "register",
                    f"duplicate learner name {name!r}: already registered by distribution "
                    f"{first.distribution!r}, also by {info.distribution!r} (ignored)",
                )
            self.learners[name] = Registered(cls, info)
            info.learners.append(name)

        return register

    def _dataset_register(self, info: PluginInfo) -> Callable[[DatasetSpec], None]:
        def register(spec: DatasetSpec) -> None:
            names = [spec.name, *spec.aliases]
            taken = [n for n in names if n.lower() in self.dataset_aliases]
            if taken:
                first = self.datasets[self.dataset_aliases[taken[0].lower()]].plugin
                return self._fail(
                    info,
                    "register",
                    f"duplicate dataset name {taken[0]!r}: already registered by distribution "
                    f"{first.distribution!r}, also by {info.distribution!r} (ignored)",
                )
            self.datasets[spec.name] = Registered(spec, info)
            for n in names:
                self.dataset_aliases[n.lower()] = spec.name
            info.datasets.append(spec.name)

        return register

    def _backbone_register(self, info: PluginInfo) -> Callable[..., None]:
        def register(name: str, factory: Callable[..., Any]) -> None:
            if name in self.backbones:
                first = self.backbones[name].plugin
                return self._fail(
                    info,
                    "register",
                    f"duplicate backbone name {name!r}: already registered by distribution "
                    f"{first.distribution!r}, also by {info.distribution!r} (ignored)",
                )
            self.backbones[name] = Registered(factory, info)
            info.backbones.append(name)

        return register


def _entry_points() -> list[tuple[md.EntryPoint, str, str]]:
    """(entry point, distribution name, version) for the group, deduplicated, in a stable order."""
    seen, out = set(), []
    for ep in md.entry_points(group=GROUP):
        dist = getattr(ep, "dist", None)
        dname = dist.metadata["Name"] if dist is not None else "?"
        version = dist.version if dist is not None else "?"
        if (ep.name, ep.value) in seen:
            continue
        seen.add((ep.name, ep.value))
        out.append((ep, dname, version))
    return sorted(out, key=lambda t: (t[1] != "fewshot-bench", t[1], t[0].name))


def _env_list(value: str | None) -> set[str]:
    return {v.strip() for v in (value or "").split(",") if v.strip()}


def load_plugins(
    *,
    strict: bool | None = None,
    disabled: Iterable[str] | None = None,
    extra: Iterable[tuple[str, object]] = (),
) -> PluginHost:
    """Build a plugin host from the installed entry points (and ``extra`` (name, module) pairs).

    ``disabled`` names plugins (entry-point or distribution names) to skip; it defaults to
    the comma-separated ``FEWSHOT_BENCH_DISABLE_PLUGINS``. With ``strict`` (default: the
    ``FEWSHOT_BENCH_STRICT_PLUGINS`` environment variable) any load failure raises.
    """
    if strict is None:
        strict = os.environ.get(STRICT_ENV, "").lower() not in ("", "0", "false", "no")
    blocked = set(disabled) if disabled is not None else _env_list(os.environ.get(DISABLE_ENV))
    pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
    pm.add_hookspecs(hookspecs)
    host = PluginHost(pm)

    candidates: list[tuple[PluginInfo, Callable[[], object]]] = []
    for ep, dname, version in _entry_points():
        info = PluginInfo(ep.name, dname, version, ep.value)
        candidates.append((info, ep.load))
    for name, module in extra:
        info = PluginInfo(name, getattr(module, "__name__", name), "?", getattr(module, "__name__", name))
        candidates.append((info, lambda m=module: m))

    for info, load in candidates:
        disabled = info.name in blocked or info.distribution in blocked
        if info.name in host.plugins:  # two distributions chose the same entry-point name
            if not disabled:
                first = host.plugins[info.name]
                host._fail(
                    info,
                    "import",
                    f"entry-point name {info.name!r} is already used by distribution {first.distribution!r}; "
                    "rename the entry point in pyproject.toml (ignored)",
                )
            continue
        host.plugins[info.name] = info
        if disabled:
            info.disabled = True
            continue
        try:
            pm.register(load(), name=info.name)
        except (Exception, SystemExit) as exc:  # an import error (even sys.exit) must not break the others
            host._fail(info, "import", exc)
            continue
        try:
            pm.check_pending()  # per plugin, so a misspelt hook is blamed on its own plugin
        except pluggy.PluginValidationError as exc:
            pm.unregister(name=info.name)
            host._fail(info, "import", f"implements an unknown hook: {exc}")

    host._call_hook("fewshot_bench_register_learners", host._learner_register)
    host._call_hook("fewshot_bench_register_datasets", host._dataset_register)
    host._call_hook("fewshot_bench_register_backbones", host._backbone_register)

    if strict and host.failures:
        f = host.failures[0]
        # Blocking by entry-point name would also block another distribution's plugin of that name.
        owner = host.plugins.get(f.plugin)
        block = f.plugin if owner is None or owner.distribution == f.distribution else f.distribution
        more = len(host.failures) - 1
        raise PluginError(
            f"plugin {f.plugin!r} from {f.distribution!r} failed at {f.stage}: {f.error} "
            + (f"(and {more} more: see `fewshot-bench plugins`) " if more else "")
            + f"(strict plugin loading; unset {STRICT_ENV} or block it with {DISABLE_ENV}={block})"
        )
    return host
