"""Run folders and what goes in them: config, per-step metrics, summary, manifest."""
