"""Library behind train.py, predict.py, stack.py and tools/: one concept per module."""
