"""Fine-tune stage: CBLUE tasks with official readers, metrics and submission formats,
results.jsonl rows and a leaderboard table."""
