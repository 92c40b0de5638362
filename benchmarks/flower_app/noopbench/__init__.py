"""No-op Flower App for benchmarks/versus_flower.py."""
