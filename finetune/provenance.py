"""Which task data a result was scored on: file hashes, and whether the files are the official
CBLUE release.

"Official" is decided by content, not by folder name: a task's data is official CBLUE when every
file it reads is byte-identical to a CBLUE 1.0 release file known here (:data:`OFFICIAL_CBLUE_SHA256`,
the files staged in the shared data and described in its SOURCES.md: Sherlock-coder/CBLUE snapshot
8f879e3624b0 of the 2021 Tianchi release). A same-named copy with other bytes (a subset, the demo's
built-in CBLUE-shaped tasks, a re-split) is labelled "CBLUE-format", never "CBLUE". An official
train file that is not staged here (CMeEE_train.json, CMeIE_train.json) cannot be recognized and
is reported as not official.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

OFFICIAL_CBLUE_SHA256: dict[str, str] = {
    "CHIP-CDN_dev.json": "205a79d4d03da7fe5eef9010a892a63068f47fd28b8bc42572687f89106aa850",
    "CHIP-CDN_test.json": "b3b629252168250558974fe1d6453182ebc9b6c5a72a488fe4f1aef691b2de52",
    "CHIP-CDN_train.json": "636b82fbfb78ca23287494ddbf15940263b6a5a2009f05d9a603f68163316f5a",
    "CHIP-CTC_dev.json": "d0b578cdd5507988605e5819c518974e59b5f0cab3bae48bb053985e755dde3b",
    "CHIP-CTC_test.json": "1e35aa3f9c15440d8cee2c8d38a503e22bd116faefc04193b76486a9dade37a3",
    "CHIP-CTC_train.json": "dcf5b9af0e346734c16eb7f1da29a3e4a662bb57c56c087d9a7adf5d330798c4",
    "CMeEE_dev.json": "bbe6be016bdb1a418362507024902b70587b951a884cf4a96a6d1246822cd07c",
    "CMeEE_test.json": "6614b545378694687e6f45ef8d5a3f7002bcfacf7e4f476e3644a90c3ee63f7b",
    "53_schemas.json": "d642657dfecf7716bacb0de44afc3fc29ae4cc9428da7c95cd4e9c03e9a95642",
    "CMeIE_dev.json": "3ae4dcf92a8741a16591537901860e7e54bc057447dd07712691401fa48b985a",
    "CMeIE_test.json": "b6a6bc8e43aeafe8b8da4517fbd5862abd90081383465749aa491b02f2076e37",
    "KUAKE-QIC_dev.json": "a572e0576afe8510bc9d6b25424f835e6d30e760109ac9fb48c8a77696aa2602",
    "KUAKE-QIC_test.json": "bcce4b015269e64fef87a042283e2965438d2131f3fdfbb87ad916078ecc4acc",
    "KUAKE-QIC_train.json": "090b296e71e6ca5144a193e2fc32b0297ab662cb689539ced1272198f19bc372",
    "KUAKE-QQR_dev.json": "e0b9c401328b2ef3b59f3900124f5b6fc383a6424c12162534f869b3d48a2391",
    "KUAKE-QQR_test.json": "bc11a70be7a331b904cd58c395a98b5759393d0d3ea11504bd59720c15216009",
    "KUAKE-QQR_train.json": "5e483caea00e9d2fbd798a7a90a7879d0090cae263e966b4a4aa2964686bd54c",
    "KUAKE-QTR_dev.json": "c698b3a00bbe7ef1e7e5b88c7370c55d6744e57dfbbcd5f705bd458e8f6efba9",
    "KUAKE-QTR_test.json": "ca98421428f51a019ac0ebb4e1e9e7dc09ef6cf3378fcf77e4a659a1d616ff5f",
    "KUAKE-QTR_train.json": "e6e7a9f0bd9d01a75eb90904c99ceb4bfed4dec1199632494f26e03ad96225fd",
}


def task_data_identity(files: list[Path]) -> dict[str, Any]:
    """``{"files": {name: sha256}, "official": bool}`` of the files a task read."""
    from cmedbert.artifact import sha256_file

    hashes = {Path(f).name: sha256_file(Path(f)) for f in files}
    official = bool(hashes) and all(OFFICIAL_CBLUE_SHA256.get(n) == h for n, h in hashes.items())
    return {"files": hashes, "official": official}


def benchmark_label(task: str, official: bool) -> str:
    """How reports and model cards name a task: "CBLUE X" only for the official files."""
    return f"CBLUE {task}" if official else f"{task} (CBLUE-format data, not the official CBLUE files)"
