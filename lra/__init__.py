"""The engine: model, one training loop for every task, run records, benchmarks."""
