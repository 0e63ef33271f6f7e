"""cmedbert's corpus logic as datatrove pipeline steps for anyone's datatrove pipeline.

Each step wraps the same code the corpus build runs (readers, normalization, boilerplate, PII,
filters, decontamination), so a team that already builds corpora with datatrove can drop the
medical-Chinese parts into its own pipeline, with datatrove's readers, writers, dedup and
executors around them::

    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.writers import JsonlWriter
    from cmedbert.corpus.steps import MedicalReader, Normalize, ScrubPII, MedicalFilters, Decontaminate

    LocalPipelineExecutor(pipeline=[
        MedicalReader({"name": "dialogue", "type": "toyhom_csv", "paths": ["data/*.csv"]}),
        Normalize(), ScrubPII(), MedicalFilters(), Decontaminate(["cblue/*/*_dev.json"]),
        JsonlWriter("out/"),
    ], tasks=4).run()

Drops are datatrove drops (``stats.json``: ``dropped_<reason>``; an ``exclusion_writer`` keeps the
documents). Bad input records (undecodable lines, broken JSON) are counted as
``bad_<reason>`` by the reader. The corpus build itself (``cmedbert corpus build``) runs the same
code in batched passes (:mod:`cmedbert.corpus.distributed`) because it also needs global
accounting per source, the drop log and the MinHash signatures in one read of each record.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from datatrove.data import Document, DocumentsPipeline
from datatrove.pipeline.base import PipelineStep
from datatrove.pipeline.filters.base_filter import BaseFilter

from cmedbert.config import from_dict
from cmedbert.corpus.config import CleaningConfig, CorpusConfig, SourceConfig, expand_paths
from cmedbert.paths import anchor


def _source(source: SourceConfig | dict[str, Any]) -> SourceConfig:
    return source if isinstance(source, SourceConfig) else from_dict(SourceConfig, dict(source), "source")


class MedicalReader(PipelineStep):
    """Reads one cmedbert source (any ``type`` of :mod:`cmedbert.corpus.readers`: dialogue CSV/TXT,
    MedDialog, QA CSV, instruction JSON lines, KG dictionaries/triples/tables, plain text, JSON
    text) into datatrove Documents. Task ``rank`` reads every ``world_size``-th file."""
    name = "cmedbert medical reader"
    type = "📖 - READER"

    def __init__(self, source: SourceConfig | dict[str, Any], base_dir: str = "", data_root: str = "",
                 limit: int = -1) -> None:
        super().__init__()
        self.source = _source(source)
        self.base_dir, self.data_root, self.limit = base_dir, data_root, limit

    def files(self) -> list[Path]:
        src = self.source
        if self.base_dir:  # relative paths of a source built in Python: against base_dir, like a config file's folder
            src = dataclasses.replace(src, paths=[anchor(p, self.base_dir) for p in src.paths])
        cfg = CorpusConfig(sources=[src], data_root=self.data_root)
        return expand_paths(cfg, src.paths, f"source {src.name!r}")

    def run(self, data: DocumentsPipeline = None, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from cmedbert.corpus.readers import Bad, detect_encoding
        from cmedbert.corpus.source_types import reader_for

        if data:
            yield from data
        src, n = self.source, 0
        for path in self.files()[rank::world_size]:
            if path.stat().st_size == 0:
                self.stat_update("bad_empty_file")
                continue
            enc = detect_encoding(path, src.encoding)
            for rec_no, item in enumerate(reader_for(src.type)(path, src, enc), 1):
                if isinstance(item, Bad):
                    self.stat_update(f"bad_{item.reason}")
                    continue
                if 0 <= self.limit <= n:
                    return
                n += 1
                self.stat_update("documents")
                yield Document(text=item.text, id=f"{src.name}:{path.name}:{rec_no}",
                               metadata={"source": src.name, "file": str(path), "line": item.line})


class Normalize(PipelineStep):
    """NFKC, full/half width, HTML and control characters, optional traditional -> simplified
    (OpenCC), then repeated boilerplate lines (greetings, disclaimers) removed."""
    name = "cmedbert normalize + boilerplate"
    type = "✂️ - FORMAT"

    def __init__(self, traditional_to_simplified: bool = True, boilerplate_lines: list[str] | None = None) -> None:
        super().__init__()
        self.t2s, self.extra = traditional_to_simplified, boilerplate_lines

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from cmedbert.corpus.clean import Boilerplate, normalize

        boiler = Boilerplate(self.extra)
        for doc in data or []:
            text, removed = boiler.strip(normalize(doc.text, self.t2s))
            if removed:
                self.stat_update("boilerplate_lines_removed", value=removed)
            doc.text = text
            yield doc


class ScrubPII(PipelineStep):
    """Replaces personal data (phones, ID numbers, bank cards, e-mail, URLs, WeChat/QQ handles, ...)
    by typed placeholders such as ``<PHONE>``; counts per type in the stats."""
    name = "cmedbert PII scrub"
    type = "🔏 - PII"

    def __init__(self, types: list[str] | None = None) -> None:
        super().__init__()
        self.types = types

    def run(self, data: DocumentsPipeline, rank: int = 0, world_size: int = 1) -> DocumentsPipeline:
        from cmedbert.corpus.pii import Scrubber

        scrubber = Scrubber(self.types)
        for doc in data or []:
            counts: Counter = Counter()
            doc.text = scrubber.scrub(doc.text, counts)
            for kind, n in counts.items():
                self.stat_update(f"pii_{kind}", value=n)
            yield doc


class MedicalFilters(BaseFilter):
    """cmedbert's quality filters (length, CJK ratio, symbol/digit ratios, repeated lines, ...,
    see ``[cleaning]``) with the same reasons as the build's ``drops.jsonl``."""
    name = "cmedbert filters"

    def __init__(self, cleaning: CleaningConfig | dict[str, Any] | None = None, exclusion_writer=None) -> None:
        super().__init__(exclusion_writer)
        c = cleaning or CleaningConfig()
        self.cleaning = c if isinstance(c, CleaningConfig) else from_dict(CleaningConfig, dict(c), "cleaning")

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        from cmedbert.corpus.clean import Filters

        if not hasattr(self, "_filters"):
            self._filters = Filters(self.cleaning)
        reason = self._filters.reason(doc.text)
        return (False, reason) if reason else True


class Decontaminate(BaseFilter):
    """Drops documents sharing an ``ngram``-character n-gram with an evaluation file (CBLUE dev/test
    in their official formats); the reason names the task."""
    name = "cmedbert decontaminate"

    def __init__(self, files: Iterable[str | Path], ngram: int = 13, min_chars: int = 10,
                 traditional_to_simplified: bool = True, exclusion_writer=None) -> None:
        super().__init__(exclusion_writer)
        self.files, self.ngram, self.min_chars, self.t2s = [str(f) for f in files], ngram, min_chars, traditional_to_simplified

    def filter(self, doc: Document) -> bool | tuple[bool, str]:
        if not hasattr(self, "_index"):
            from cmedbert.corpus.config import DecontamConfig
            from cmedbert.corpus.decontam import Decontaminator

            d = DecontamConfig()
            cfg = CorpusConfig(sources=[], decontam=d)
            files = expand_paths(cfg, self.files, "decontaminate files")
            self._index = Decontaminator(files, self.ngram, self.min_chars, d.fields, d.task_from, self.t2s)
        hit = self._index.match(doc.text)
        return (False, f"decontaminated_{hit[0]}") if hit else True
