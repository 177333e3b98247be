"""The plugin manager: loads entry points one by one and builds the learner/dataset registries.

Nothing here runs at import time: :func:`load_plugins` builds a fresh :class:`PluginHost`.
A plugin that fails to import, raises inside a hook or registers a duplicate name is
recorded as a :class:`PluginFailure` and left out; every other plugin keeps working.

Plugins are keyed by (distribution, entry-point name): two distributions may both have
an entry point called ``leo``. The project's own distributions (:data:`PROJECT_DISTRIBUTIONS`)
always win a name clash (learner, dataset or backbone names), whatever the load order;
among other distributions the first registration, in a fixed order, wins. Each hook call
registers into a staging area that is committed only if the hook returns normally.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pluggy

from fewshot_bench.api import hooks as hookspecs
from fewshot_bench.api.datasets import DatasetSpec
from fewshot_bench.api.learner import LEARNER_NAME, Learner
from fewshot_bench.errors import ConfigError, PluginError

GROUP = "fewshot_bench"
DISABLE_ENV = "FEWSHOT_BENCH_DISABLE_PLUGINS"
STRICT_ENV = "FEWSHOT_BENCH_STRICT_PLUGINS"
# The project's own distributions, in load order: their names are never taken by another plugin.
PROJECT_DISTRIBUTIONS = ("fewshot-bench", "fewshot-bench-leo", "fewshot-bench-maml", "fewshot-bench-metasgd")


def normalize_distribution(name: str) -> str:
    """A distribution name as PEP 503 compares them: ``Fewshot_Bench`` -> ``fewshot-bench``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def is_project_distribution(name: str) -> bool:
    """Whether ``name`` is one of fewshot-bench's own distributions (which win every name clash)."""
    return normalize_distribution(name) in PROJECT_DISTRIBUTIONS


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

    @property
    def ref(self) -> str:
        """``DISTRIBUTION:ENTRYPOINT``: the plugin's unique key, and what disables exactly it."""
        return f"{self.distribution}:{self.name}"


@dataclass
class PluginFailure:
    """Why a plugin (or one of its registrations) was left out.

    ``brief`` is a few words for one-line warnings; ``disable`` the ``DIST:ENTRYPOINT``
    value of ``FEWSHOT_BENCH_DISABLE_PLUGINS`` that disables exactly this plugin.
    """

    plugin: str
    distribution: str
    stage: str  # "import", "hook", "register"
    error: str
    brief: str = ""
    disable: str = ""

    def __post_init__(self) -> None:
        self.disable = self.disable or f"{self.distribution}:{self.plugin}"
        self.brief = " ".join((self.brief or f"{self.disable} failed at {self.stage}").split())


@dataclass
class Registered:
    """A registered object and the plugin that provided it."""

    obj: Any
    plugin: PluginInfo


@dataclass
class _Stage:
    """What one hook call registered, committed only if the hook returns normally."""

    info: PluginInfo
    hook: str
    items: list[tuple[str, Callable[[], None]]] = field(default_factory=list)  # (what, commit)
    open: bool = True


def _one_line(text: str, limit: int = 120) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


class PluginHost:
    """Registries of learners, datasets and backbones built from the loaded plugins."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self.pm = pm
        # Keyed by PluginInfo.ref ("distribution:entry-point"), in load order.
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

    def failure_warning(self) -> str | None:
        """One line summing up the load failures (None when there are none), for stderr."""
        if not self.failures:
            return None
        plugins = len({(f.distribution, f.plugin) for f in self.failures})
        more = len(self.failures) - 1
        return (
            f"warning: {plugins} plugin{'s' if plugins != 1 else ''} failed to load ({self.failures[0].brief}"
            + (f"; and {more} more" if more else "")
            + "); see `fewshot-bench plugins`"
        )

    # --- loading -------------------------------------------------------------------------

    def _fail(self, info: PluginInfo, stage: str, error: BaseException | str, brief: str = "") -> None:
        msg = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        self.failures.append(PluginFailure(info.name, info.distribution, stage, msg, brief))

    def _call_hook(self, hook_name: str, make_register: Callable[[_Stage], Callable]) -> None:
        """Call one hook implementation at a time so a failing plugin is isolated and named.

        Implementations are called in load order (the project's own distributions first),
        not pluggy's (which ``tryfirst``/``trylast`` would let a plugin change). Each call
        registers into a stage, committed only if the hook returns normally.
        """
        order = {ref: i for i, ref in enumerate(self.plugins)}
        by_plugin = {id(p): ref for ref, p in self.pm.list_name_plugin()}
        impls = [impl for impl in getattr(self.pm.hook, hook_name).get_hookimpls() if id(impl.plugin) in by_plugin]
        impls.sort(key=lambda impl: order[by_plugin[id(impl.plugin)]])
        for impl in impls:
            stage = _Stage(self.plugins[by_plugin[id(impl.plugin)]], hook_name)
            try:
                impl.function(register=make_register(stage))
            except (Exception, SystemExit) as exc:  # a broken plugin must not break the others
                rolled_back = [what for what, _ in stage.items]
                self._fail(
                    stage.info,
                    "hook",
                    f"{type(exc).__name__}: {exc}"
                    + (f" (rolled back what it registered first: {', '.join(rolled_back)})" if rolled_back else ""),
                    f"{stage.info.ref} raised {type(exc).__name__} in {hook_name}",
                )
                continue
            finally:
                stage.open = False
            for what, commit in stage.items:
                try:
                    commit()
                except Exception as exc:  # e.g. a dataset spec whose aliases are not strings
                    self._fail(stage.info, "register", f"{what}: {type(exc).__name__}: {exc} (ignored)")

    def _stage(self, stage: _Stage, what: str, commit: Callable[[], None]) -> None:
        if not stage.open:
            self._fail(
                stage.info,
                "register",
                f"register() of {what} was called after its {stage.hook} hook returned (ignored)",
                f"{stage.info.ref} registered {what} too late",
            )
            return
        stage.items.append((what, commit))

    def _clash(self, kind: str, name: str, owner: PluginInfo, info: PluginInfo, what: str) -> None:
        """Record the rejection of ``info``'s registration of ``name``, already owned by ``owner``."""
        if is_project_distribution(owner.distribution) and not is_project_distribution(info.distribution):
            rule = "fewshot-bench's own distributions win every name clash"
        else:
            rule = "the first registration wins"
        self._fail(
            info,
            "register",
            f"duplicate {kind} name {name!r}: already registered by distribution {owner.distribution!r} "
            f"(entry point {owner.name!r}), also by {info.distribution!r} (entry point {info.name!r}, {what}): "
            f"rejected, {rule}; to stop loading it: {DISABLE_ENV}={info.ref}",
            f"{kind} name {name!r} from {info.distribution} rejected, it belongs to {owner.distribution}",
        )

    def _learner_register(self, stage: _Stage) -> hookspecs.RegisterLearner:
        info = stage.info

        def register(cls: type) -> None:
            name = getattr(cls, "name", None)
            if not (isinstance(cls, type) and issubclass(cls, Learner)):
                return self._fail(info, "register", f"{cls!r} is not a fewshot_bench.api.Learner subclass")
            if not isinstance(name, str) or not LEARNER_NAME.match(name):
                return self._fail(info, "register",
                                  f"learner name {name!r} of {cls.__qualname__} is not lower-case words joined by '-'")
            self._stage(stage, f"learner {name!r}", lambda: commit(cls, name))

        def commit(cls: type, name: str) -> None:
            if name in self.learners:
                self.duplicate_learners.setdefault(name, []).append(info.distribution)
                return self._clash("learner", name, self.learners[name].plugin, info,
                                   f"{cls.__module__}.{cls.__qualname__}")
            self.learners[name] = Registered(cls, info)
            info.learners.append(name)

        return register

    def _dataset_register(self, stage: _Stage) -> hookspecs.RegisterDataset:
        info = stage.info

        def register(spec: DatasetSpec) -> None:
            name = getattr(spec, "name", None)
            if not isinstance(name, str) or not all(isinstance(a, str) for a in getattr(spec, "aliases", None) or ()):
                return self._fail(info, "register",
                                  f"{spec!r} is not a DatasetSpec with a string name and string aliases")
            self._stage(stage, f"dataset {name!r}", lambda: commit(spec))

        def commit(spec: DatasetSpec) -> None:
            names = [spec.name, *spec.aliases]
            taken = [n for n in names if n.lower() in self.dataset_aliases]
            if taken:
                owner = self.datasets[self.dataset_aliases[taken[0].lower()]].plugin
                return self._clash("dataset", taken[0], owner, info, f"dataset {spec.name!r}")
            self.datasets[spec.name] = Registered(spec, info)
            for n in names:
                self.dataset_aliases[n.lower()] = spec.name
            info.datasets.append(spec.name)

        return register

    def _backbone_register(self, stage: _Stage) -> hookspecs.RegisterBackbone:
        info = stage.info

        def register(name: str, factory: Callable[..., Any]) -> None:
            if not isinstance(name, str) or not callable(factory):
                return self._fail(info, "register", f"backbone {name!r}: expected a string name and a callable factory")
            self._stage(stage, f"backbone {name!r}", lambda: commit(name, factory))

        def commit(name: str, factory: Callable[..., Any]) -> None:
            if name in self.backbones:
                return self._clash("backbone", name, self.backbones[name].plugin, info, f"{factory!r}")
            self.backbones[name] = Registered(factory, info)
            info.backbones.append(name)

        return register


def _load_order(distribution: str, entry_point: str) -> tuple:
    """The project's own distributions first (in PROJECT_DISTRIBUTIONS order), then the others by name."""
    dist = normalize_distribution(distribution)
    own = PROJECT_DISTRIBUTIONS.index(dist) if dist in PROJECT_DISTRIBUTIONS else len(PROJECT_DISTRIBUTIONS)
    return (own, dist, entry_point)


def _entry_points() -> list[tuple[md.EntryPoint, str, str]]:
    """(entry point, distribution name, version) for the group, one per (distribution, name), in load order.

    A distribution found twice on the path (an editable install and its ``.egg-info``) counts
    once: the first found, as Python's imports would use it.
    """
    seen, out = set(), []
    for ep in md.entry_points(group=GROUP):
        dist = getattr(ep, "dist", None)
        dname = dist.metadata["Name"] if dist is not None else "?"
        version = dist.version if dist is not None else "?"
        key = (normalize_distribution(dname), ep.name)
        if key in seen:
            continue
        seen.add(key)
        out.append((ep, dname, version))
    return sorted(out, key=lambda t: _load_order(t[1], t[0].name))


def _env_list(value: str | None) -> set[str]:
    return {v.strip() for v in (value or "").split(",") if v.strip()}


def is_disabled(info: PluginInfo, blocked: Iterable[str]) -> bool:
    """Whether ``blocked`` disables the plugin: by ``DIST:ENTRYPOINT`` (exactly it), by
    distribution name (all its entry points) or by entry-point name (that name in every distribution)."""
    dist = normalize_distribution(info.distribution)
    for item in blocked:
        if ":" in item:
            bdist, _, bname = item.partition(":")
            if normalize_distribution(bdist.strip()) == dist and bname.strip() == info.name:
                return True
        elif item == info.name or normalize_distribution(item) == dist:
            return True
    return False


def load_plugins(
    *,
    strict: bool | None = None,
    disabled: Iterable[str] | None = None,
    extra: Iterable[tuple[str, object]] = (),
) -> PluginHost:
    """Build a plugin host from the installed entry points (and ``extra`` (name, module) pairs).

    ``disabled`` names plugins to skip: ``DIST:ENTRYPOINT`` (exactly that plugin), a
    distribution name (all its plugins) or an entry-point name (that name in every
    distribution); it defaults to the comma-separated ``FEWSHOT_BENCH_DISABLE_PLUGINS``.
    With ``strict`` (default: the ``FEWSHOT_BENCH_STRICT_PLUGINS`` environment variable)
    any load failure raises.
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
        if info.ref in host.plugins:  # only possible for two `extra` plugins of one module and name
            host._fail(info, "import", f"plugin {info.ref!r} is already loaded (ignored)")
            continue
        host.plugins[info.ref] = info
        if is_disabled(info, blocked):
            info.disabled = True
            continue
        try:
            pm.register(load(), name=info.ref)
        except (Exception, SystemExit) as exc:  # an import error (even sys.exit) must not break the others
            host._fail(info, "import", exc,
                       f"{info.ref} failed to import ({_one_line(f'{type(exc).__name__}: {exc}', 80)})")
            continue
        try:
            pm.check_pending()  # per plugin, so a misspelt hook is blamed on its own plugin
        except pluggy.PluginValidationError as exc:
            pm.unregister(name=info.ref)
            host._fail(info, "import", f"implements an unknown hook: {exc}", f"{info.ref} implements an unknown hook")

    host._call_hook("fewshot_bench_register_learners", host._learner_register)
    host._call_hook("fewshot_bench_register_datasets", host._dataset_register)
    host._call_hook("fewshot_bench_register_backbones", host._backbone_register)

    if strict and host.failures:
        f = host.failures[0]
        more = len(host.failures) - 1
        raise PluginError(
            f"plugin {f.plugin!r} from {f.distribution!r} failed at {f.stage}: {_one_line(f.error, 1000)} "
            + (f"(and {more} more: see `fewshot-bench plugins`) " if more else "")
            + f"(strict plugin loading; unset {STRICT_ENV} or block it with {DISABLE_ENV}={f.disable})"
        )
    return host
