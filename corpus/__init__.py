"""Corpus stage: read raw medical dialogue / QA / KG / plain text, clean, scrub PII,
deduplicate, decontaminate against CBLUE, and write sharded parquet with a manifest."""
