"""What a learner offers, for ``fewshot-bench learners NAME``: task kinds, their classes, every
Config key (type, default, whether ``--set`` can change it) and the per-dataset presets."""

from __future__ import annotations

import dataclasses
import logging
import typing
from typing import Any

from fewshot_bench.errors import ConfigError, FewshotBenchError
from fewshot_bench.plugin_host import PluginHost


def type_text(typ: Any) -> str:
    """A readable type: ``float``, ``int | None``, ``tuple[int, ...]``, ``'a' | 'b'``."""
    origin = typing.get_origin(typ)
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in typing.get_args(typ))
    if isinstance(typ, type) and origin is None:
        return typ.__name__
    return str(typ).replace("typing.", "").replace("NoneType", "None")


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return field.default_factory()  # type: ignore[misc]
    return "(required)"


def value_text(value: Any) -> str:
    """Defaults as a user would type them after ``--set KEY=``."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (tuple, list)):
        return ",".join(value_text(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


def config_fields(config_cls: type) -> list[dict[str, str]]:
    """Every field of a Config dataclass: key, type and default."""
    try:
        hints = typing.get_type_hints(config_cls)
    except Exception:  # an annotation that does not resolve: show it as written
        hints = {}
    return [
        {"key": f.name, "type": type_text(hints.get(f.name, f.type)), "default": value_text(_default(f))}
        for f in dataclasses.fields(config_cls)
    ]


def preset_rows(impl: type) -> list[dict[str, str]]:
    """For each preset and tuned (dataset, shot): the values that differ from the Config defaults."""
    base = {f.name: _default(f) for f in dataclasses.fields(impl.Config)}
    settings = list(impl.tuned_settings)
    names = list(impl.presets)
    rows: list[dict[str, str]] = []
    quiet = logging.getLogger(impl.__module__.split(".")[0])  # a preset's fallback notes are not news here
    level, quiet.level = quiet.level, logging.WARNING
    try:
        for preset in names or [None]:
            for dataset, shot in settings:
                try:
                    config = (impl.default_config(dataset, shot, preset=preset) if preset is not None
                              else impl.default_config(dataset, shot))
                except (FewshotBenchError, TypeError):
                    continue
                values = dataclasses.asdict(config)
                changed = {k: value_text(v) for k, v in values.items() if k in base and v != base[k]}
                rows.append({"preset": preset or "-", "dataset": dataset, "shot": str(shot), **changed})
    finally:
        quiet.level = level
    return rows


def describe(host: PluginHost, name: str) -> dict[str, Any]:
    """Everything ``learners NAME`` shows, as JSON-ready data."""
    if name not in host.learners:
        raise ConfigError(f"unknown learner {name!r}; installed: {', '.join(sorted(host.learners))}")
    reg = host.learners[name]
    cls = reg.obj
    kinds = []
    for kind in cls.kinds:
        impl = cls.for_kind(kind)
        kinds.append({
            "kind": kind,
            "class": f"{impl.__module__}.{impl.__qualname__}",
            "config": f"{impl.Config.__module__}.{impl.Config.__qualname__}",
            "meta_trained": bool(impl.meta_trainable),
            "presets": list(impl.presets),
            "default_preset": impl.check_preset(None),
            "tuned_settings": [list(s) for s in impl.tuned_settings],
            "fields": config_fields(impl.Config),
            "preset_values": preset_rows(impl),
        })
    return {
        "learner": name,
        "distribution": reg.plugin.distribution,
        "description": cls.description,
        "transductive": bool(cls.transductive),
        "kinds": kinds,
    }


def render(info: dict[str, Any]) -> str:
    """``describe``'s data as text: a header, then per task kind the Config table and the presets."""
    from tabulate import tabulate

    lines = [
        f"{info['learner']} ({info['distribution']}): {info['description']}",
        f"task kinds: {', '.join(k['kind'] for k in info['kinds'])}"
        + ("; transductive (tables mark it)" if info["transductive"] else ""),
    ]
    for k in info["kinds"]:
        lines += [
            "",
            f"{k['kind']}: {k['class']} ({'meta-trained' if k['meta_trained'] else 'not meta-trained'}); "
            f"options: --set KEY=VALUE, fields of {k['config']}",
            tabulate(k["fields"], headers="keys", tablefmt="simple") if k["fields"] else "(no options)",
        ]
        if k["presets"]:
            default = f" (default {k['default_preset']})" if k["default_preset"] else ""
            lines.append(f"\n--hparams {'|'.join(k['presets'])}{default}")
        if k["preset_values"]:
            settings = ", ".join(f"{d} {s}-shot" for d, s in k["tuned_settings"])
            lines += [
                f"tuned values for {settings} (keys that differ from the defaults above; blank: the default):",
                tabulate(k["preset_values"], headers="keys", tablefmt="simple", disable_numparse=True),
            ]
    return "\n".join(lines)
