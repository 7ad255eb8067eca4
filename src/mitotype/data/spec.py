"""The data-set spec every command accepts: ``READER:ARG[:ARG...][:KEY=VALUE...]``, several joined with ``+``.

Examples: ``amibr:../shared/data/amibr``, ``amibr:../shared/data/amibr:split=train``,
``amibr:DIR:domain=source``, ``midog25:labels.csv:images:domain=scanner``, ``folder:ext/ROOT``,
``manifest:figures.csv``, ``stack:stack_5.tiff:gt=ground_truth.json``,
``amibr:DIR+midog25:CSV:IMAGEDIR`` (figures that two parts share are kept once, from the first part).
Readers and their options: :data:`mitotype.data.readers.READERS`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from mitotype.data.figure import Figure
from mitotype.errors import MitotypeError


@dataclass(frozen=True)
class Part:
    reader: str
    args: tuple[str, ...]
    options: dict[str, str] = field(default_factory=dict)


def _usage(name: str) -> str:
    from mitotype.data.readers import READERS

    r = READERS[name]
    opts = "".join(f"[:{k}={'|'.join(v) if v else 'VALUE'}]" for k, v in r.options.items())
    return f"{name}:{':'.join(r.args)}{opts} (e.g. {r.example})"


def _guess_reader(path: str) -> str:
    if os.path.isfile(os.path.join(path, "AMI-BR.csv")):
        return "amibr"
    if path.lower().endswith((".tif", ".tiff")):
        return "stack"
    return "manifest" if os.path.isfile(path) else "folder"


def parse_spec(spec: str) -> list[Part]:
    """Split a spec into parts and check every reader name, argument count and option against the registry."""
    from mitotype.data.readers import READERS

    if not spec or not spec.strip():
        raise MitotypeError("empty data spec; expected e.g. amibr:PATH, folder:PATH, manifest:CSV")
    parts = []
    for text in spec.split("+"):
        name, _, rest = text.strip().partition(":")
        if name not in READERS:
            hint = f"; it looks like a path: did you mean {_guess_reader(text)}:{text}?" if os.path.exists(text) else ""
            raise MitotypeError(f"data spec {text!r}: unknown reader {name!r}; valid readers: "
                                f"{', '.join(READERS)}{hint}")
        reader = READERS[name]
        args, options = [], {}
        for item in rest.split(":") if rest else []:
            key, eq, value = item.partition("=")
            if not eq:
                args.append(item)
                continue
            if key not in reader.options:
                valid = ", ".join(reader.options) or "none"
                raise MitotypeError(f"data spec {text!r}: unknown option {key!r} for {name}; valid options: "
                                    f"{valid}. Usage: {_usage(name)}")
            allowed = reader.options[key]
            if allowed is not None and value not in allowed:
                raise MitotypeError(f"data spec {text!r}: {key}={value!r} is not valid; choose one of "
                                    f"{', '.join(allowed)}")
            options[key] = value
        if len(args) != len(reader.args) or not all(args):
            raise MitotypeError(f"data spec {text!r}: {name} takes {len(reader.args)} argument(s) "
                                f"({', '.join(reader.args)}), got {len([a for a in args if a])}. "
                                f"Usage: {_usage(name)}")
        parts.append(Part(name, tuple(args), options))
    return parts


def dedupe(figures: list[Figure]) -> list[Figure]:
    """Keep the first figure of each :attr:`Figure.key` (same slide and centre = same figure)."""
    seen: set[str] = set()
    out = []
    for fig in figures:
        if fig.key not in seen:
            seen.add(fig.key)
            out.append(fig)
    return out


def load_figures(spec: str) -> list[Figure]:
    """All figures a spec names, in reader order, de-duplicated across ``+`` parts; error if none."""
    from mitotype.data.readers import READERS

    figures: list[Figure] = []
    for part in parse_spec(spec):
        figures.extend(READERS[part.reader].read(*part.args, **part.options))
    listed = len(figures)
    figures = dedupe(figures)
    if len(figures) < listed:  # never fewer figures than the input lists without a word
        logging.getLogger(__name__).warning(
            "data spec %r: %d of %d listed figures are duplicates (same file and page, or same slide and centre) "
            "and are counted once", spec, listed - len(figures), listed)
    if not figures:
        raise MitotypeError(f"data spec {spec!r} selects no figures")
    return figures
