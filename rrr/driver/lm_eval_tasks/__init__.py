"""Offline lm-evaluation-harness tasks shipped with rrr (YAML + JSONL; `rrr eval-general` passes
this directory to lm-eval's TaskManager as an include path)."""
