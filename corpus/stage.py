"""The corpus stage's declaration (see :mod:`cmedbert.stage`): raw sources -> corpus folder."""

from __future__ import annotations

from cmedbert.stage import Stage

BUILD = Stage(
    name="corpus", command=("corpus", "build"),
    config="cmedbert.corpus.config:CorpusConfig", loader="cmedbert.corpus.config:load",
    run="cmedbert.corpus.build:main",
    help="build a corpus folder from a config (see configs/corpus/)",
)
