"""Long varied medical text for the long-record tests, the fuzz test and benchmarks/corpus_long_line.py."""

from __future__ import annotations

import random

SENTENCES = ["患者{n}岁，主诉头痛头晕{d}天，血压{s}/{t}mmHg，建议低盐饮食并规律服用降压药物。",
             "糖尿病患者第{n}次复查空腹血糖{g}mmol/L，应控制饮食、适量运动并监测糖化血红蛋白。",
             "支气管哮喘急性发作时可吸入沙丁胺醇{d}喷，症状持续{n}小时不缓解应及时就医。"]


def long_line(n_bytes: int, seed: int = 0) -> str:
    rnd = random.Random(seed)
    parts, size = [], 0
    while size < n_bytes:  # varied sentences: neither near-duplicate pieces nor n-gram repetition
        s = rnd.choice(SENTENCES).format(n=rnd.randint(1, 99999), d=rnd.randint(1, 30), s=rnd.randint(100, 180),
                                         t=rnd.randint(60, 110), g=round(rnd.uniform(4, 15), 1))
        parts.append(s)
        size += len(s.encode("utf-8"))
    return "".join(parts)
