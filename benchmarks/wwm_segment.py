"""Whole-word segmentation + alignment throughput (MB/s of UTF-8 text).

ours      tokenizer.segment.Segmenter (jieba's words via the ``jieba_fast_dat`` C++ route, medical
          user dict, batch tokenization with offsets, numpy alignment of the whole batch) on whole
          documents, in 1 and 2 processes (spawned Pool whose initializer loads the segmenter +
          user dict once; start-up not timed);
previous  the same stage before the fast path (plain jieba, per-document alignment:
          ``Segmenter(segmenter="jieba").segment_reference``), 1 process, for MB per CPU-second;
baseline  the HF ``run_chinese_ref.py`` recipe with jieba in place of LTP: a Python loop segments
          line by line, the tokenizer runs over batches of 100 lines, ``add_sub_symbol`` marks
          "##" on the Chinese pieces of multi-character words, and the reference ids are written
          as JSON lines to a file; in 1 and 2 processes (the line list cut in halves).

Both sides use the same tokenizer (bert-base-chinese from the shared data, else the tiny test
vocab), the same jieba user dictionary (KG term lists) and the same text.

    .venv/bin/python benchmarks/wwm_segment.py [--mb 3] [--hmm/--no-hmm]

Last line: ``mb_per_s=<ours, 2 processes> baseline_mb_per_s=<baseline, 2 processes> ...`` plus
``mb_per_cpu_s`` (1 process, MB per CPU-second: the rate of an unshared core, which tells what
2 idle cores would give when other jobs load the machine), ``prev_mb_per_cpu_s`` (previous path)
and ``load`` (1-minute load average at the end; the machine has 2 cores).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from cmedbert.paths import shared_data_root  # noqa: E402

# MB per CPU-second of one process (1-process runs): what a core delivers when it is not shared
# with other jobs; on a loaded machine the wall-clock MB/s above it is lower.
CPU: dict[str, float] = {}
KG = ["kg/qasystem-medicalkg/dict/disease.txt", "kg/qasystem-medicalkg/dict/symptom.txt",
      "kg/qasystem-medicalkg/dict/drug.txt", "kg/qasystem-medicalkg/dict/check.txt",
      "kg/thuocl/THUOCL_medical.txt"]


def load_inputs(mb: float, tmp: Path) -> tuple[list[str], str, list[str]]:
    """(documents, tokenizer dir, KG terms): shared medical text when present, else test data."""
    from cmedbert.tokenizer.base import read_terms

    root = shared_data_root()
    docs: list[str] = []
    budget = int(mb * 1e6)
    if (root / "vocab/bert-base-chinese/vocab.txt").is_file():
        for r in json.loads((root / "corpus/zhongjing/huatuo26M_test.json").read_text(encoding="utf-8")):
            docs.append(r["instruction"][0] + "\n" + r["output"][0])
        for r in json.loads((root / "corpus/doctorglm/GenMedGPT-5k-ch.json").read_text(encoding="utf-8")):
            docs.append(r["input"] + "\n" + r["output"])
        text = (root / "corpus/medicalgpt/fever.txt").read_text(encoding="utf-8")
        docs += [text[i:i + 2000] for i in range(0, len(text), 2000)]
        tok_dir = str(root / "vocab/bert-base-chinese")
        terms = read_terms(root / p for p in KG)
    else:
        from cmedbert.tokenizer.testing import TERMS, base_vocab, corpus_texts, write_base_tokenizer

        print("shared data not found: using the tiny test corpus and vocab", file=sys.stderr)
        docs = corpus_texts(50)
        tok_dir = str(write_base_tokenizer(tmp / "tok", base_vocab()))
        terms = list(TERMS)
    out, size, k = [], 0, 0
    while size < budget:  # repeat the text if it is smaller than the budget
        d = docs[k % len(docs)]
        out.append(d)
        size += len(d.encode("utf-8"))
        k += 1
    return out, tok_dir, terms


def batches(docs: list[str], n: int = 128) -> list[list[str]]:
    return [docs[i:i + n] for i in range(0, len(docs), n)]


# --- ours --------------------------------------------------------------------------------------

def run_previous(docs: list[str], tok_dir: str, terms: list[str], hmm: bool) -> float:
    """MB per CPU-second of the path before the fast one (plain jieba, per-document alignment)."""
    from cmedbert.tokenizer.segment import Segmenter

    seg = Segmenter(tok_dir, terms, hmm=hmm, segmenter="jieba")
    c = time.process_time()
    n = sum(seg.segment_reference(b).n_bytes for b in batches(docs))
    return n / (time.process_time() - c) / 1e6


def run_ours(docs: list[str], tok_dir: str, terms: list[str], workers: int, hmm: bool, segmenter: str) -> float:
    from cmedbert.tokenizer.segment import Segmenter, init_worker, segment_batch

    work = batches(docs)
    if workers == 1:
        seg = Segmenter(tok_dir, terms, hmm=hmm, segmenter=segmenter)
        t, c = time.perf_counter(), time.process_time()
        n = sum(seg.segment(b).n_bytes for b in work)
        CPU["ours"] = n / (time.process_time() - c) / 1e6
        return n / (time.perf_counter() - t) / 1e6
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=init_worker, initargs=(tok_dir, terms, hmm, True, segmenter)) as pool:
        pool.map(segment_batch, [["预热"]] * workers * 2)  # start-up (imports, jieba dict) not timed
        t = time.perf_counter()
        n = sum(r.n_bytes for r in pool.imap(segment_batch, work))
        return n / (time.perf_counter() - t) / 1e6


# --- baseline: HF run_chinese_ref.py with jieba ------------------------------------------------

def _is_chinese_char(cp: int) -> bool:
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F
            or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def is_chinese(word: str) -> int:
    for char in word:
        if not _is_chinese_char(ord(char)):
            return 0
    return 1


def get_chinese_word(tokens: list[str]) -> list[str]:
    word_set = set()
    for token in tokens:
        if len(token) > 1 and is_chinese(token):
            word_set.add(token)
    return list(word_set)


def add_sub_symbol(bert_tokens: list[str], chinese_word_set: set) -> list[str]:
    if not chinese_word_set:
        return bert_tokens
    max_word_len = max(len(w) for w in chinese_word_set)
    bert_word = bert_tokens
    start, end = 0, len(bert_word)
    while start < end:
        single_word = True
        if is_chinese(bert_word[start]):
            length = min(end - start, max_word_len)
            for i in range(length, 1, -1):
                whole_word = "".join(bert_word[start:start + i])
                if whole_word in chinese_word_set:
                    for j in range(start + 1, start + i):
                        bert_word[j] = "##" + bert_word[j]
                    start = start + i
                    single_word = False
                    break
        if single_word:
            start += 1
    return bert_word


def _baseline_worker(args: tuple[list[str], str, list[str], str, bool]) -> int:
    lines, tok_dir, terms, ref_file, hmm = args
    from cmedbert.tokenizer.base import load_tokenizer
    from cmedbert.tokenizer.segment import build_jieba

    seg = build_jieba(terms)
    tok = load_tokenizer(tok_dir)
    t, c = time.perf_counter(), time.process_time()
    seg_res = []
    for line in lines:  # the recipe's loop: one segmenter call per line
        seg_res.append(get_chinese_word(list(seg.cut(line, HMM=hmm))))
    bert_res = []
    for i in range(0, len(lines), 100):
        bert_res.extend(tok(lines[i:i + 100], add_special_tokens=True, truncation=True, max_length=512)["input_ids"])
    ref_ids = []
    for input_ids, chinese_word in zip(bert_res, seg_res):
        input_tokens = tok.convert_ids_to_tokens(input_ids)
        input_tokens = add_sub_symbol(input_tokens, set(chinese_word))
        ref_ids.append([i for i, token in enumerate(input_tokens)
                        if token[:2] == "##" and len(token) == 3 and _is_chinese_char(ord(token[2]))])
    with open(ref_file, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in ref_ids)
    return int((time.perf_counter() - t) * 1e9), int((time.process_time() - c) * 1e9)


def run_baseline(docs: list[str], tok_dir: str, terms: list[str], workers: int, hmm: bool, tmp: Path) -> float:
    lines = [ln for d in docs for ln in d.splitlines() if ln.strip()]
    n_bytes = sum(len(ln.encode("utf-8")) for ln in lines)
    parts = [lines[k::workers] for k in range(workers)]
    args = [(p, tok_dir, terms, str(tmp / f"ref_{workers}_{k}.txt"), hmm) for k, p in enumerate(parts)]
    if workers == 1:
        ns = [_baseline_worker(args[0])]
        CPU["baseline"] = n_bytes / (ns[0][1] / 1e9) / 1e6
    else:
        with mp.get_context("spawn").Pool(workers) as pool:
            ns = pool.map(_baseline_worker, args)
    return n_bytes / (max(w for w, _ in ns) / 1e9) / 1e6  # wall = the slower half (start-up not timed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=3.0, help="MB of UTF-8 text to process per measurement")
    ap.add_argument("--hmm", action=argparse.BooleanOptionalAction, default=True, help="jieba HMM (pack default: on)")
    ap.add_argument("--segmenter", default="jieba_fast_dat", help="jieba_fast_dat | jieba (pack's 'segmenter')")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        docs, tok_dir, terms = load_inputs(args.mb, tmp)
        mb = sum(len(x.encode("utf-8")) for x in docs) / 1e6
        print(f"text: {len(docs)} documents, {mb:.2f} MB; tokenizer {tok_dir}; {len(terms)} user-dict terms; "
              f"hmm={args.hmm}; segmenter={args.segmenter}; cpus={os.cpu_count()} load={os.getloadavg()[0]:.1f}")
        res = {}
        for w in (1, 2):
            res[f"ours_{w}"] = run_ours(docs, tok_dir, terms, w, args.hmm, args.segmenter)
            print(f"ours     {w} process(es): {res[f'ours_{w}']:.3f} MB/s")
        res["prev"] = run_previous(docs, tok_dir, terms, args.hmm)
        print(f"previous 1 process: {res['prev']:.3f} MB per CPU-second")
        for w in (1, 2):
            res[f"base_{w}"] = run_baseline(docs, tok_dir, terms, w, args.hmm, tmp)
            print(f"baseline {w} process(es): {res[f'base_{w}']:.3f} MB/s")
    print(f"mb_per_s={res['ours_2']:.3f} baseline_mb_per_s={res['base_2']:.3f} "
          f"mb_per_s_1proc={res['ours_1']:.3f} baseline_mb_per_s_1proc={res['base_1']:.3f} "
          f"mb_per_cpu_s={CPU['ours']:.3f} baseline_mb_per_cpu_s={CPU['baseline']:.3f} "
          f"prev_mb_per_cpu_s={res['prev']:.3f} speedup={res['ours_2'] / res['base_2']:.2f} "
          f"load={os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
