"""Configuration of the corpus stage.

Paths follow the one path rule of :mod:`cmedbert.paths` (docs/ARCHITECTURE.md, "Paths"):
``${data_root}/…`` is the data root (this config's ``data_root`` if set, else
``$CMEDBERT_SHARED_DATA``, else ``../shared/data``); a relative path in the config file is relative
to the file's folder, one given on the command line to the current folder. So
``paths = ["${data_root}/corpus/zhongjing/*.json"]`` reads the shared data wherever it lives, and
``paths = ["my_data/*.txt"]`` reads next to the config file.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cmedbert.config import load_config
from cmedbert.errors import ConfigError
from cmedbert.paths import resolve

EXECUTORS = ("local", "slurm", "ray", "inline")

SourceType = Literal[
    "toyhom_csv", "toyhom_txt", "meddialog", "qa_csv", "instruction_jsonl",
    "kg_dict", "kg_terms_freq", "kg_triples", "kg_table", "plain_text", "json_text",
]


@dataclass
class SourceConfig:
    name: str = field(metadata={"help": "source name, stored in the `source` column and used for per-source counts"})
    type: SourceType = field(metadata={"help": "reader: toyhom_csv, toyhom_txt, meddialog, qa_csv, instruction_jsonl, "
                                               "kg_dict, kg_terms_freq, kg_triples, kg_table, plain_text, "
                                               "json_text (string field columns.text of JSON array / JSON-lines records)"})
    paths: list[str] = field(metadata={"path": "path", "help": "files or globs (see the path rule in corpus/config.py)"})
    encoding: str = field(default="auto", metadata={
        "help": "auto (BOM, else UTF-8 if it decodes, else GB18030) or a Python codec name to force"})
    columns: dict[str, str] = field(default_factory=dict, metadata={
        "help": "role -> column/key name overrides, e.g. {question='input', answer='target'} for qa_csv, "
                "{subject='name'} for kg_table"})
    templates: dict[str, str] = field(default_factory=dict, metadata={
        "help": "kg_triples/kg_table: predicate -> template with {s} and {o}; kg_dict: category -> template with {t}"})
    emit: Literal["none", "sentences"] = field(default="none", metadata={
        "help": "kg_dict / kg_terms_freq: 'none' = terms feed only the tokenizer dictionary (corpus.kg.read_terms); "
                "'sentences' = verbalize terms as '{t}是一种疾病。' documents, grouped per category"})
    terms_per_doc: int = field(default=20, metadata={"help": "kg_dict emit=sentences: terms per document"})
    labels: bool = field(default=True, metadata={
        "help": "render QA/instruction turns with 患者：/医生： labels (false: knowledge-style instructions, "
                "rendered as plain question and answer lines)"})
    paragraphs: bool = field(default=False, metadata={
        "help": "plain_text: documents are separated by blank lines (default: one document per line)"})
    max_records: int = field(default=0, metadata={"help": "read at most this many records per file, or per chunk of a "
                                                          "chunked file (0 = all; for subsets)"})

    def validate(self) -> None:
        if not self.paths:
            raise ConfigError(f"source {self.name!r}: paths is empty")
        if self.terms_per_doc < 1:
            raise ConfigError(f"source {self.name!r}: terms_per_doc must be >= 1")


@dataclass
class CleaningConfig:
    traditional_to_simplified: bool = field(default=True, metadata={"help": "convert traditional to simplified Chinese (OpenCC t2s)"})
    min_chars: int = field(default=16, metadata={"help": "drop documents shorter than this (characters, after cleaning)"})
    max_chars: int = field(default=4000, metadata={
        "help": "split documents longer than this (characters) at sentence ends into pieces of at most this size"})
    min_cjk_fraction: float = field(default=0.3, metadata={"help": "drop documents whose CJK share of non-space characters is below this"})
    max_char_run: int = field(default=16, metadata={"help": "drop documents with one character repeated this many times in a row"})
    max_dup_ngram_fraction: float = field(default=0.5, metadata={
        "help": "drop documents where more than this share of character 10-grams are repeats (documents >= 100 characters)"})
    boilerplate_lines: list[str] = field(default_factory=list, metadata={
        "help": "extra regexes: a line (or sentence) matching one is removed as platform boilerplate; the defaults in "
                "corpus/clean.py always apply"})

    def validate(self) -> None:
        if self.min_chars < 1 or self.max_chars < 2 * self.min_chars:
            raise ConfigError("cleaning: need 1 <= min_chars and max_chars >= 2 * min_chars")


@dataclass
class PiiConfig:
    enabled: bool = field(default=True, metadata={"help": "scrub personal identifiers with typed placeholders"})
    types: list[str] = field(default_factory=lambda: ["email", "url", "id_card", "bank_card", "mobile", "landline", "qq", "wechat"],
                             metadata={"help": "identifier types to scrub (see corpus/pii.py)"})


@dataclass
class DedupConfig:
    exact: bool = field(default=True, metadata={"help": "drop exact duplicates (hash of the cleaned text), globally"})
    near: bool = field(default=True, metadata={"help": "drop near duplicates (MinHash LSH over character n-grams), globally"})
    threshold: float = field(default=0.7, metadata={"help": "estimated Jaccard similarity of character n-gram sets above which two documents are duplicates"})
    ngram: int = field(default=5, metadata={"help": "shingle size (characters)"})
    num_perm: int = field(default=128, metadata={"help": "MinHash signature length (uint32 values per document)"})
    seed: int = field(default=1, metadata={"help": "seed of the MinHash hash functions"})

    def validate(self) -> None:
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError("dedup.threshold must be in (0, 1)")
        if self.num_perm < 8 or self.num_perm & (self.num_perm - 1):
            raise ConfigError("dedup.num_perm must be a power of two >= 8")


@dataclass
class DecontamConfig:
    files: list[str] = field(default_factory=list, metadata={"path": "path",
        "help": "evaluation files (globs; JSON array or JSON lines) whose texts must not appear in the corpus"})
    ngram: int = field(default=13, metadata={"help": "a shared character n-gram of this length marks a document as contaminated"})
    min_chars: int = field(default=10, metadata={
        "help": "evaluation texts shorter than `ngram` but at least this long are matched as a whole (short CBLUE queries)"})
    fields: list[str] = field(default_factory=lambda: ["text", "query", "query1", "query2", "title", "text1", "text2",
                                                       "sentence", "sentence1", "sentence2", "content"],
                              metadata={"help": "JSON keys whose string values are evaluation text"})
    task_from: Literal["parent", "stem"] = field(default="parent", metadata={
        "help": "task name of an evaluation file: its folder name (parent) or file name without _dev/_test (stem)"})

    def validate(self) -> None:
        if not 4 <= self.min_chars <= self.ngram:
            raise ConfigError("decontam: need 4 <= min_chars <= ngram")


@dataclass
class OutputConfig:
    shard_mb: float = field(default=128.0, metadata={"help": "target size of one output shard (MB of UTF-8 text)"})
    compression: str = field(default="zstd", metadata={
        "help": "parquet compression codec: none, snappy, gzip, brotli, lz4 or zstd"})

    def validate(self) -> None:
        if self.shard_mb <= 0:
            raise ConfigError(f"config key 'output.shard_mb': must be > 0, got {self.shard_mb}")
        codecs = ("none", "snappy", "gzip", "brotli", "lz4", "zstd")
        if self.compression.lower() not in codecs:
            raise ConfigError(f"config key 'output.compression': {self.compression!r} is not one of {list(codecs)}")
        import pyarrow as pa

        if self.compression.lower() != "none" and not pa.Codec.is_available(self.compression.lower()):
            raise ConfigError(f"config key 'output.compression': {self.compression!r} is not available in this pyarrow")


@dataclass
class SlurmConfig:
    """How ``executor=slurm`` submits each pass (one SLURM array job per pass, chained with
    ``afterok`` dependencies; datatrove's SlurmPipelineExecutor)."""
    partition: str = field(default="cpu", metadata={"help": "SLURM partition"})
    time: str = field(default="24:00:00", metadata={"help": "time limit of one array task (HH:MM:SS)"})
    cpus_per_task: int = field(default=1, metadata={"help": "CPUs of one array task"})
    mem_per_cpu_gb: int = field(default=4, metadata={"help": "memory per CPU (GB)"})
    qos: str = field(default="normal", metadata={"help": "SLURM quality of service"})
    job_name: str = field(default="cmedbert-corpus", metadata={"help": "job name prefix (one job per pass)"})
    max_array_size: int = field(default=1001, metadata={"help": "largest array the cluster accepts (MaxArraySize)"})
    venv_path: str = field(default="", metadata={"help": "virtualenv activated on the nodes (empty = none)"})
    env_command: str = field(default="", metadata={"help": "shell command run on the nodes before the task"})
    mail_type: str = field(default="NONE", metadata={"help": "sbatch --mail-type"})
    sbatch_args: dict[str, str] = field(default_factory=dict, metadata={
        "help": "extra #SBATCH options, e.g. {account = \"med\"}"})

    def validate(self) -> None:
        if self.cpus_per_task < 1 or self.mem_per_cpu_gb < 1 or self.max_array_size < 1:
            raise ConfigError("slurm: cpus_per_task, mem_per_cpu_gb and max_array_size must be >= 1")


@dataclass
class CorpusConfig:
    sources: list[SourceConfig] = field(metadata={"help": "input sources ([[sources]] tables)"})
    data_root: str = field(default="", metadata={"path": "path",
        "help": "what ${data_root} in paths means; empty = $CMEDBERT_SHARED_DATA or ../shared/data"})
    cleaning: CleaningConfig = field(default_factory=CleaningConfig, metadata={"help": "normalization and filters"})
    pii: PiiConfig = field(default_factory=PiiConfig, metadata={"help": "PII scrubbing"})
    dedup: DedupConfig = field(default_factory=DedupConfig, metadata={"help": "deduplication"})
    decontam: DecontamConfig = field(default_factory=DecontamConfig, metadata={"help": "decontamination"})
    output: OutputConfig = field(default_factory=OutputConfig, metadata={"help": "output shards"})
    workers: int = field(default=0, metadata={"help": "processes for reading/cleaning (0 = all CPU cores)", "affects_output": False})
    chunk_mb: float = field(default=64.0, metadata={
        "help": "line-based files (plain_text, JSON lines, term lists) larger than this (MB) are split at line ends "
                "into chunks processed in parallel (0 = never split)"})
    progress: bool = field(default=True, metadata={"help": "show progress bars on stderr", "affects_output": False})
    executor: str = field(default="local", metadata={"affects_output": False,
        "help": "who runs the passes: local (datatrove local processes), slurm (one datatrove SLURM array per "
                "pass; `--dry-run` prints the job scripts), ray (datatrove Ray executor, needs `ray`), or inline "
                "(one process pool, no datatrove: the reference implementation)"})
    tasks: int = field(default=0, metadata={"affects_output": False,
        "help": "datatrove tasks of each parallel pass (0 = one pass-1 task per input unit and `workers` tasks "
                "for the dedup passes; for slurm set it to the number of array tasks you want)"})
    work_dir: str = field(default="", metadata={"path": "path", "affects_output": False,
        "help": "intermediate files and datatrove logs (empty = .OUT.datatrove beside the output; on a cluster "
                "it must be on a shared filesystem); kept until the build succeeds, a re-run resumes from it"})
    keep_work: bool = field(default=False, metadata={"affects_output": False, "help": "keep work_dir (logs, stats) after a successful build"})
    slurm: SlurmConfig = field(default_factory=SlurmConfig, metadata={"affects_output": False, "help": "executor=slurm settings"})

    def validate(self) -> None:
        names = [s.name for s in self.sources]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise ConfigError(f"duplicate source name(s): {sorted(dup)}")
        if not self.sources:
            raise ConfigError("config lists no sources")
        if self.executor not in EXECUTORS:
            raise ConfigError(f"executor must be one of {', '.join(EXECUTORS)}, got {self.executor!r}")
        if self.tasks < 0:
            raise ConfigError(f"tasks must be >= 0, got {self.tasks}")


def load(path: str | Path | None, overrides: list[str] | None = None) -> CorpusConfig:
    """Load a CorpusConfig (relative paths in the file are relative to the file's folder)."""
    return load_config(CorpusConfig, path, overrides)


def resolve_path(cfg: CorpusConfig, pattern: str) -> str:
    """One path or glob of this config, resolved by the path rule (:func:`cmedbert.paths.resolve`)."""
    return str(resolve(pattern, data_root=cfg.data_root or None))


def expand_paths(cfg: CorpusConfig, patterns: list[str], what: str) -> list[Path]:
    """Resolve and glob ``patterns`` in order (sorted within a glob, duplicates removed).
    A pattern that matches nothing is an error naming it."""
    out: list[Path] = []
    seen: set[Path] = set()
    for pat in patterns:
        full = resolve_path(cfg, pat)
        matches = sorted(glob.glob(full, recursive=True)) if glob.has_magic(full) else ([full] if os.path.exists(full) else [])
        files = [Path(m) for m in matches if os.path.isfile(m)]
        if not files:
            raise ConfigError(f"{what}: {pat!r} matches no file (resolved to {full})")
        for f in files:
            if f not in seen:
                seen.add(f)
                out.append(f)
    return out
