"""Tokenizer stage: audit a vocab on a corpus, extend it or train one in-domain, segment
Chinese words with jieba (+ a medical user dictionary) and pack token shards for pretraining."""
