"""What every script shares: the error type, atomic writes, tolerant reads, command-line helpers, option strings, paths, output checks, torchrun."""
