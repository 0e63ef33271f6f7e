"""The stage contract: one declaration per stage, from which its CLI subcommand and the
experiment's steps are built.

A stage declares

* its config dataclass (``config``, as ``"module:Class"`` so that ``cmedbert --help`` imports
  nothing heavy),
* ``run(cfg, out) -> manifest`` (``run``, ``"module:function"``): does the work into the
  output folder ``out`` and returns its manifest (pretrain may instead return
  ``{"status": "interrupted", ...}`` after checkpointing on SIGTERM),
* its inputs: which config fields hold input artifacts and which stage must have produced them.

The declarations live in each stage package (``cmedbert.corpus.stage``, ``cmedbert.tokenizer.stage``,
``cmedbert.pretrain.stage``, ``cmedbert.finetune.stage``). ``add_command`` turns one into an
argparse subcommand ``[CONFIG] [key=value ...] --out DIR``; :mod:`cmedbert.experiment` builds its
steps from the same objects (``Stage.build_config`` + ``Stage.execute``).
"""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from cmedbert.errors import ArtifactError


def resolve(ref: str) -> Any:
    """``"package.module:attr"`` -> the object."""
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class Input:
    """A config field that names an input artifact folder."""

    key: str = field(metadata={"help": "dotted config key; its value is a path, a list of paths or a table name -> path"})
    stages: tuple[str, ...] = field(metadata={"help": "manifest stage(s) that may have produced it"})
    external: bool = field(default=False, metadata={
        "help": "also accepts what cmedbert did not build (a Hugging Face folder or hub id without manifest)"})

    def paths(self, cfg: Any) -> Iterator[str]:
        value: Any = cfg
        for part in self.key.split("."):
            value = getattr(value, part, None)
        if value is None or value == "":
            return
        if isinstance(value, dict):
            yield from (str(v) for v in value.values())
        elif isinstance(value, (list, tuple)):  # paths, or tables with a path (pretrain data.phases)
            yield from (str(getattr(v, "path", v)) for v in value)
        else:
            yield str(value)

    def check(self, cfg: Any) -> None:
        """A folder with a manifest must come from one of ``stages``; without one it is accepted only
        when ``external`` (else the stage itself reports the missing input)."""
        import json

        for p in self.paths(cfg):
            manifest = Path(p) / "manifest.json"
            if not manifest.is_file():
                continue
            try:
                stage = json.loads(manifest.read_text(encoding="utf-8")).get("stage")
            except (OSError, ValueError):
                raise ArtifactError(f"config key {self.key!r}: {manifest} is not valid JSON") from None
            if stage not in self.stages:
                raise ArtifactError(f"config key {self.key!r}: {p} is a {stage!r} artifact, expected "
                                    f"{' or '.join(repr(s) for s in self.stages)}")


@dataclass(frozen=True)
class Stage:
    """One stage: config class, ``run(cfg, out) -> manifest`` and inputs (see the module doc)."""

    name: str  # the manifest's stage name
    command: tuple[str, ...]  # CLI words, e.g. ("tokenizer", "pack"); () = not a subcommand
    config: str  # "module:Class"
    run: str  # "module:function", run(cfg, out) -> manifest
    inputs: tuple[Input, ...] = ()
    help: str = ""
    loader: str | None = None  # "module:function" (path, overrides) -> cfg, when loading sets more than the file

    @property
    def config_class(self) -> type:
        return resolve(self.config)

    def load(self, path: str | Path | None, overrides: list[str] | None = None) -> Any:
        """The typed config from a file + ``key=value`` overrides (the CLI path)."""
        if self.loader:
            return resolve(self.loader)(path, overrides)
        from cmedbert.config import load_config

        return load_config(self.config_class, path, overrides)

    def build_config(self, data: dict[str, Any], where: str = "") -> Any:
        """The typed config from plain data (the experiment path); errors name ``where.key``."""
        from cmedbert.config import from_dict

        return from_dict(self.config_class, data, where)

    def check_inputs(self, cfg: Any) -> None:
        for inp in self.inputs:
            inp.check(cfg)

    def execute(self, cfg: Any, out: str | Path) -> dict[str, Any]:
        """Check the inputs, then ``run(cfg, out)``."""
        self.check_inputs(cfg)
        return resolve(self.run)(cfg, out)

    def describe_inputs(self) -> str:
        return "\n".join(f"  {i.key}: output of stage {' or '.join(i.stages)}"
                         + (" (or a Hugging Face folder / hub id)" if i.external else "") for i in self.inputs)


def config_epilog(stage: Stage) -> str:
    """``--help`` text: the stage's inputs and every config key with default and help."""
    from cmedbert.config import describe

    rows = describe(stage.config_class)
    text = ""
    if stage.inputs:
        text += "inputs:\n" + stage.describe_inputs() + "\n\n"
    return text + "config keys:\n" + "\n".join(f"  {k} = {d}\n      {h}" for k, d, h in rows)


def add_command(sub: argparse._SubParsersAction, stage: Stage, func: Callable[[argparse.Namespace], int] | None = None,
                name: str | None = None, **kwargs: Any) -> argparse.ArgumentParser:
    """The subcommand ``[CONFIG] [key=value ...] --out DIR`` of ``stage``; ``func(args)`` runs it
    (default: load the config, ``execute``, print the output folder). ``args.stage`` is the stage."""
    from cmedbert.cliargs import add_config_args

    p = sub.add_parser(name or stage.command[-1], help=stage.help, description=kwargs.pop("description", stage.help),
                       epilog=config_epilog(stage), formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)
    add_config_args(p)
    p.set_defaults(func=func or run_command, stage=stage)
    return p


def load_from_args(args: argparse.Namespace, extra_overrides: list[str] | None = None) -> Any:
    """The stage's typed config from ``args.args`` (``[CONFIG] [key=value ...]``)."""
    from cmedbert.cliargs import split_config_args

    path, overrides = split_config_args(args.args)
    return args.stage.load(path, overrides + list(extra_overrides or []))


def run_command(args: argparse.Namespace) -> int:
    cfg = load_from_args(args)
    args.stage.execute(cfg, args.out)
    print(f"wrote {args.out}")
    return 0
