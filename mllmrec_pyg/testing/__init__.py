"""Reference implementations used to check the library (tests, benchmarks)."""
