"""Which reader reads which source type (``[[sources]] type = ...`` in the corpus config).

Its own module, above both :mod:`cmedbert.corpus.readers` (text, dialogue, QA, instruction
readers) and :mod:`cmedbert.corpus.kg` (knowledge-graph readers, which use the generic readers),
so neither of those two imports the other in a circle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator

from cmedbert.corpus import kg, readers
from cmedbert.corpus.config import SourceConfig
from cmedbert.corpus.readers import Item

Reader = Callable[[Path, SourceConfig, str], Iterator[Item]]

READERS: dict[str, Reader] = {
    "toyhom_csv": readers.read_toyhom_csv,
    "toyhom_txt": readers.read_toyhom_txt,
    "meddialog": readers.read_meddialog,
    "qa_csv": readers.read_qa_csv,
    "instruction_jsonl": readers.read_instruction_jsonl,
    "plain_text": readers.read_plain_text,
    "json_text": readers.read_json_text,
    "kg_dict": kg.read_kg_dict,
    "kg_terms_freq": kg.read_kg_dict,
    "kg_triples": kg.read_kg_triples,
    "kg_table": kg.read_kg_table,
}


def reader_for(kind: str) -> Reader:
    return READERS[kind]
