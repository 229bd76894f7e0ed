"""Command-line tools: parity checks and checkpoint / index comparison."""
