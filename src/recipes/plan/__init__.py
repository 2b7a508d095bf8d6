"""CPU-only planning: parallel layout, validation, and (for dry runs) FLOPs and memory estimates."""
