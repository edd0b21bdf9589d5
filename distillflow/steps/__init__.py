"""distillflow's own curation and judging steps (pure functions over rows)."""
